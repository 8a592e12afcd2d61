// Package redisconn opens a Redis client from a URL: a single server or a
// Redis Cluster, with the cluster client tuned so that a master failover
// stalls callers for seconds rather than a minute.
//
// # URL forms
//
//	redis://[user[:password]@]host[:port][/db][?option=value...]
//	rediss://...                     (TLS)
//	unix://[user[:password]@]/path/to/socket[?db=N...]
//
// give a *redis.Client, exactly as redis.ParseURL reads them (its query
// options, such as dial_timeout or pool_size, apply). A cluster is named in
// either of two forms, both giving a *redis.ClusterClient:
//
//	redis://[user[:password]@]host1:port1?addr=host2:port2&addr=host3:port3[&option=value...]
//	redis+cluster://[user[:password]@]host1:port1,host2:port2,host3:port3[/0][?option=value...]
//	rediss+cluster://...             (TLS)
//
// The first is go-redis's own (redis.ParseClusterURL): a redis:// or
// rediss:// URL with at least one addr= parameter is a cluster. The second
// lists the seed nodes comma-separated in the authority, which is easier to
// write in a flag or an environment variable; it accepts the same query
// options (addr= included). Seeds are only where the client starts: it learns
// the whole cluster from the first seed that answers, so a few are enough. A
// seed without a port means 6379. A cluster has only database 0, so a path
// other than "", "/" or "/0" is an error. Query options that go-redis knows
// (dial_timeout, read_timeout, max_redirects, min_retry_backoff, ...) override
// the tuned defaults below.
//
// A malformed URL is a *URLError naming the URL with its password replaced by
// "xxxxx"; no error of this package ever carries a password.
//
// # Cluster failover: what go-redis does, and the settings chosen
//
// When a master dies (kill -9, a crashed host), Redis Cluster promotes one of
// its replicas once the other masters agree that the master is down: after
// cluster-node-timeout plus an election delay of 0.5–1 s (with a node
// timeout of 1 s, the promotion comes ≈2 s after the kill; with the server's
// default of 15 s, after ≈16–17 s). Nothing in the client can make that
// faster; what the client controls is how long after the promotion it keeps
// sending the dead master's slots to the dead address. go-redis v9's
// ClusterClient behaves as follows (osscluster.go, v9.23.0):
//
//   - It caches the slot map (CLUSTER SLOTS) and routes every write to the
//     slot's cached master. A connection error does not reload the map: the
//     command is retried on the same node, then the node is marked failing,
//     but writes still go to the cached master, since failing only steers
//     replica reads. Only a MOVED/ASK or READONLY reply triggers an immediate
//     (lazy, background) reload, and a dead master sends neither.
//   - Otherwise the map is reloaded lazily, by the first command after it has
//     grown older than ClusterOptions.ClusterStateReloadInterval, which
//     defaults to 60 s. So with the defaults, writes to a killed master's
//     slots fail for up to a minute after the kill, however early the
//     promotion came. ClusterClient.ReloadState would fix that when called,
//     but a caller has no cue to call it.
//   - A command is tried MaxRedirects+1 times (default 3+1), sleeping
//     MinRetryBackoff<<n with jitter, capped at MaxRetryBackoff (default
//     10 ms / 1 s), between attempts. After a connection error the second
//     attempt goes to the same node; from the third on, each looks the node
//     up again in the current map, so a command whose retries span a reload
//     follows the new master without the caller seeing an error.
//     (Transaction pipelines retry on the same node and need the caller's
//     retry to see the new map.)
//   - A pool that failed PoolSize dials in a row fails fast with the last
//     dial error and probes the address once a second in the background;
//     each dial is tried DialerRetries times (default 5, 100 ms apart).
//
// Open therefore sets these ClusterOptions, each only where the URL left it
// unset:
//
//   - ClusterStateReloadInterval = 1 s. The slot map is at most ≈1 s (plus
//     go-redis's 200 ms reload cool-down) behind the cluster while commands
//     flow, so a caller sees the new master ≈1 s after the promotion instead
//     of up to 60 s. go-redis's own lazy reload does this, so Open needs no
//     goroutine of its own (a background ReloadState ticker would only help
//     an idle client, whose first command then fails once and triggers the
//     reload anyway) and returns a plain *redis.ClusterClient that Close
//     releases completely. The cost is one CLUSTER SLOTS per second per busy
//     client.
//   - MaxRedirects = 8, MinRetryBackoff = 25 ms, MaxRetryBackoff = 500 ms:
//     about 2–3 s of retrying inside one command, long enough to span a
//     reload, so a command issued shortly before the promotion usually
//     succeeds instead of failing; short enough that a command to a slot
//     whose master is gone for longer fails within seconds and the caller's
//     own policy takes over. MOVED and ASK redirects are followed without
//     sleeping, so eight is also ample for resharding. go-redis retries
//     commands after a connection error whether or not they reached the
//     server, as it does by default; eskit's read-model commits are
//     conditional on the stored checkpoint (DESIGN.md) and so safe to repeat.
//   - DialTimeout = 1 s and DialerRetries = 1 (one dial attempt per try). A
//     killed process refuses connections at once; a dead host or a
//     partition instead swallows the SYN, and the default 5 s timeout times
//     5 dial attempts would hold one try for 25 s. The cluster client's own
//     retries (above) replace the dialer's.
//   - ReadTimeout = WriteTimeout = 1 s (default 5 s). A frozen master
//     (SIGSTOP, a paused VM) accepts writes into its socket buffer and never
//     answers; each try then costs the read timeout, and the slot map only
//     moves on after a couple of tries, so this sets how long a frozen
//     master holds a command (2 s measured 6 s, 1 s measures 3–4 s).
//     eskit's commands, MULTI/EXEC batches of a thousand updates included,
//     take milliseconds; blocking commands (BLPOP, XREAD BLOCK) add their
//     own block time to the deadline. Raise read_timeout in the URL for long
//     Lua scripts or huge values.
//   - ContextTimeoutEnabled = true, so a caller's context deadline also
//     bounds the socket reads and writes, not only the waits between tries.
//
// Measured on the test cluster (3 masters + 3 replicas on loopback,
// cluster-node-timeout 1 s, one writer retrying every 50 ms; 2 cores):
// after kill -9 of a master, writes to its slots succeed again through the
// same client after 2.3–4.3 s (the cluster itself promotes the replica after
// ≈2.2 s), with one call failing and none blocked longer than ≈2.5 s; after
// SIGSTOP of a master, after 3.2–4.4 s, in one call that blocks that long
// and then succeeds. With go-redis's default
// ClusterOptions the same kill stalls writes to those slots for 60 s: the
// reload interval. The integration tests (TestClusterFailover*) log the
// figures; TestClusterFailoverGoRedisDefaults measures the defaults when
// ESKIT_REDISCONN_COMPARE=1.
//
// A single server (*redis.Client) is opened exactly as redis.ParseURL reads
// it: there is no failover to tune there.
//
// Open does not contact the server unless WithPing is given, so a service
// can start before Redis does and its callers retry; the client connects on
// first use and reconnects by itself.
package redisconn

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The cluster client's tuned defaults; see the package documentation.
const (
	ClusterStateReloadInterval = time.Second
	ClusterMaxRedirects        = 8
	ClusterMinRetryBackoff     = 25 * time.Millisecond
	ClusterMaxRetryBackoff     = 500 * time.Millisecond
	ClusterDialTimeout         = time.Second
	ClusterDialerRetries       = 1
	ClusterReadTimeout         = time.Second
	ClusterWriteTimeout        = time.Second
)

// Cluster URL schemes of the comma-separated seed form.
const (
	SchemeCluster    = "redis+cluster"
	SchemeClusterTLS = "rediss+cluster"
)

// URLError reports a URL that Open cannot use. URL has its password
// replaced by "xxxxx".
type URLError struct {
	URL string
	Err error
}

func (e *URLError) Error() string {
	return fmt.Sprintf("redisconn: invalid Redis URL %q: %v", e.URL, e.Err)
}

func (e *URLError) Unwrap() error { return e.Err }

// Option configures Open.
type Option func(*config)

type config struct {
	ping     bool
	single   []func(*redis.Options)
	clusters []func(*redis.ClusterOptions)
}

// WithPing makes Open check the server before returning: a single server
// must answer PING, and every master of a cluster must answer PING (which
// also loads the slot map). Open's context bounds the check. Without it, Open
// never fails because a server is down.
func WithPing() Option { return func(c *config) { c.ping = true } }

// WithOptions adjusts a single server's options after the URL is parsed,
// just before the client is created.
func WithOptions(fn func(*redis.Options)) Option {
	return func(c *config) { c.single = append(c.single, fn) }
}

// WithClusterOptions adjusts a cluster's options after the URL is parsed and
// the tuned defaults are applied, just before the client is created. Setting
// a field back to its zero value restores go-redis's default for it.
func WithClusterOptions(fn func(*redis.ClusterOptions)) Option {
	return func(c *config) { c.clusters = append(c.clusters, fn) }
}

// Open returns a client for rawURL: a *redis.Client for a single server, a
// *redis.ClusterClient for a cluster (see the package documentation for the
// URL forms). The caller closes it. A malformed URL is a *URLError; with
// WithPing, an unreachable server is an error too (and the client is closed).
func Open(ctx context.Context, rawURL string, opts ...Option) (redis.UniversalClient, error) {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	u, err := Parse(rawURL)
	if err != nil {
		return nil, err
	}
	var c redis.UniversalClient
	if u.Cluster != nil {
		for _, fn := range cfg.clusters {
			fn(u.Cluster)
		}
		c = redis.NewClusterClient(u.Cluster)
	} else {
		for _, fn := range cfg.single {
			fn(u.Single)
		}
		c, err = newClient(u.Single)
		if err != nil {
			return nil, &URLError{URL: Redact(rawURL), Err: scrub(rawURL, err)}
		}
	}
	if cfg.ping {
		if err := ping(ctx, c); err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("redisconn: %s: %w", Redact(rawURL), err)
		}
	}
	return c, nil
}

// ParsedURL is what Parse makes of a URL: exactly one of Single and Cluster
// is set.
type ParsedURL struct {
	Single  *redis.Options
	Cluster *redis.ClusterOptions
}

// Parse reads rawURL as Open does, without creating a client. Cluster
// options come with the tuned defaults applied.
func Parse(rawURL string) (ParsedURL, error) {
	fail := func(err error) (ParsedURL, error) {
		return ParsedURL{}, &URLError{URL: Redact(rawURL), Err: scrub(rawURL, stripURL(err))}
	}
	if strings.TrimSpace(rawURL) == "" {
		return fail(errors.New("empty URL"))
	}
	scheme, _, ok := strings.Cut(rawURL, "://")
	if !ok {
		return fail(errors.New(`no scheme: want redis://, rediss://, unix://, redis+cluster:// or rediss+cluster://`))
	}
	switch strings.ToLower(scheme) {
	case SchemeCluster, SchemeClusterTLS:
		o, err := parseSeedURL(rawURL)
		if err != nil {
			return fail(err)
		}
		return ParsedURL{Cluster: o}, nil
	case "redis", "rediss":
		u, err := url.Parse(rawURL)
		if err != nil {
			return fail(err)
		}
		if u.Query().Has("addr") {
			o, err := parseClusterURL(u)
			if err != nil {
				return fail(err)
			}
			return ParsedURL{Cluster: o}, nil
		}
	}
	o, err := redis.ParseURL(rawURL)
	if err != nil {
		return fail(err)
	}
	if err := checkPoolSizes(o.PoolSize, o.MinIdleConns, o.MaxIdleConns, o.MaxActiveConns, o.PipelinePoolSize); err != nil {
		return fail(err)
	}
	return ParsedURL{Single: o}, nil
}

// parseSeedURL turns redis+cluster://auth@h1:p1,h2:p2/path?q into go-redis's
// redis://auth@h1:p1/path?q&addr=h2:p2 and parses that.
func parseSeedURL(rawURL string) (*redis.ClusterOptions, error) {
	scheme, rest, _ := strings.Cut(rawURL, "://")
	base := "redis"
	if strings.EqualFold(scheme, SchemeClusterTLS) {
		base = "rediss"
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	userinfo, hosts := "", authority
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		userinfo, hosts = authority[:i+1], authority[i+1:]
	}
	if hosts == "" {
		return nil, errors.New("no seed addresses: want " + scheme + "://host1:port1,host2:port2,...")
	}
	seeds := strings.Split(hosts, ",")
	for i, s := range seeds {
		h, p, err := net.SplitHostPort(s)
		switch {
		case err == nil:
		case strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]"): // [::1]
			h, p = s[1:len(s)-1], ""
		case !strings.Contains(s, ":"):
			h, p = s, ""
		default:
			return nil, fmt.Errorf("seed address %q: want host:port", s)
		}
		if h == "" {
			return nil, fmt.Errorf("seed address %q: no host", s)
		}
		if p == "" {
			p = "6379"
		}
		seeds[i] = net.JoinHostPort(h, p)
	}
	u, err := url.Parse(base + "://" + userinfo + seeds[0] + tail)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	for _, s := range seeds[1:] {
		q.Add("addr", s)
	}
	u.RawQuery = q.Encode()
	return parseClusterURL(u)
}

// parseClusterURL parses a redis:// or rediss:// URL with addr= parameters
// (go-redis's cluster form) and applies the tuned defaults.
func parseClusterURL(u *url.URL) (*redis.ClusterOptions, error) {
	switch u.Path {
	case "", "/", "/0":
	default:
		return nil, fmt.Errorf("database %q: a Redis Cluster has only database 0", strings.TrimPrefix(u.Path, "/"))
	}
	o, err := redis.ParseClusterURL(u.String())
	if err != nil {
		return nil, err
	}
	for _, a := range o.Addrs {
		if err := checkAddr(a); err != nil {
			return nil, err
		}
	}
	if err := checkPoolSizes(o.PoolSize, o.MinIdleConns, o.MaxIdleConns, o.MaxActiveConns, o.PipelinePoolSize); err != nil {
		return nil, err
	}
	tuneCluster(o)
	return o, nil
}

// tuneCluster sets the failover settings of the package documentation where
// the URL left a field unset.
func tuneCluster(o *redis.ClusterOptions) {
	setDefault(&o.ClusterStateReloadInterval, ClusterStateReloadInterval)
	setDefault(&o.MaxRedirects, ClusterMaxRedirects)
	setDefault(&o.MinRetryBackoff, ClusterMinRetryBackoff)
	setDefault(&o.MaxRetryBackoff, ClusterMaxRetryBackoff)
	setDefault(&o.DialTimeout, ClusterDialTimeout)
	setDefault(&o.DialerRetries, ClusterDialerRetries)
	setDefault(&o.ReadTimeout, ClusterReadTimeout)
	setDefault(&o.WriteTimeout, ClusterWriteTimeout)
	o.ContextTimeoutEnabled = true
}

func setDefault[T comparable](field *T, v T) {
	var zero T
	if *field == zero {
		*field = v
	}
}

// checkAddr rejects a host:port whose port is not a number in 1..65535
// (go-redis accepts any addr= value and would only fail to dial it).
func checkAddr(addr string) error {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 || h == "" {
		return fmt.Errorf("address %q: want host:port with a port in 1..65535", addr)
	}
	return nil
}

// checkPoolSizes rejects pool sizes that go-redis would panic on when it
// creates a node's pool (it converts them to int32).
func checkPoolSizes(sizes ...int) error {
	for _, n := range sizes {
		if n > math.MaxInt32 || n < math.MinInt32 {
			return fmt.Errorf("pool size %d out of range", n)
		}
	}
	return nil
}

// newClient creates a single-server client, turning a panic of go-redis's
// constructor (invalid options) into an error.
func newClient(o *redis.Options) (c *redis.Client, err error) {
	defer func() {
		if r := recover(); r != nil {
			c, err = nil, fmt.Errorf("create client: %v", r)
		}
	}()
	return redis.NewClient(o), nil
}

func ping(ctx context.Context, c redis.UniversalClient) error {
	if cc, ok := c.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			if err := m.Ping(ctx).Err(); err != nil {
				return fmt.Errorf("ping master %s: %w", m.Options().Addr, err)
			}
			return nil
		})
	}
	if err := c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	return nil
}

// stripURL drops the URL a *url.Error carries (it may hold a password),
// keeping the reason.
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// Redact returns rawURL with the password of its user information replaced
// by "xxxxx". It works on URLs that do not parse, too: the user information
// is taken to end at the URL's last "@", so that a password with an
// unescaped "/", "?" or "#" is hidden as well (a URL whose query holds an "@"
// is redacted more than it needs).
func Redact(rawURL string) string {
	start, end, ok := password(rawURL)
	if !ok {
		return rawURL
	}
	return rawURL[:start] + "xxxxx" + rawURL[end:]
}

// password locates the password in rawURL: rawURL[start:end].
func password(rawURL string) (start, end int, ok bool) {
	_, rest, found := strings.Cut(rawURL, "://")
	if !found {
		return 0, 0, false
	}
	base := len(rawURL) - len(rest)
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return 0, 0, false
	}
	colon := strings.Index(rest[:at], ":")
	if colon < 0 {
		return 0, 0, false
	}
	return base + colon + 1, base + at, true
}

// scrub returns err's message, or a generic one when the message shows a
// piece of rawURL's password (url.Parse and go-redis quote parts of a
// malformed URL, and a password with an unescaped "/" ends up there).
func scrub(rawURL string, err error) error {
	start, end, ok := password(rawURL)
	if !ok {
		return err
	}
	msg := err.Error()
	pieces := strings.FieldsFunc(rawURL[start:end], func(r rune) bool { return strings.ContainsRune("/?#@:", r) })
	for _, p := range pieces {
		if len(p) >= 3 && strings.Contains(msg, p) {
			return errors.New("malformed URL (details withheld: they would show the password)")
		}
	}
	return err
}
