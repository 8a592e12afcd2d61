package projection

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/telemetry"
)

// Runner defaults.
const (
	// DefaultBatchSize is how many records one batch (one MULTI/EXEC)
	// applies at most.
	DefaultBatchSize = 1000
	// DefaultMaxWait is how long a live batch waits for more messages
	// after its first one before it is applied.
	DefaultMaxWait = 2 * time.Millisecond
	// DefaultAckWait is the live consumer's ack wait.
	DefaultAckWait = 30 * time.Second
	// DefaultHeartbeat is the idle heartbeat the live side asks the server
	// for: a consumer whose server went away is noticed within two of them.
	DefaultHeartbeat = 2 * time.Second
	// DefaultLeaseTTL is how long a lease lasts without renewal: a standby
	// takes over at most this long after the active runner died.
	DefaultLeaseTTL = 5 * time.Second
	// DefaultVerifyInterval is how often the live side compares what it
	// applied with the store's feed (see WithVerifyInterval).
	DefaultVerifyInterval = time.Second
	// DefaultAttempts is how many times a record is applied before it is
	// parked.
	DefaultAttempts = 3
	// DefaultMinBackoff and DefaultMaxBackoff bound the pause between
	// attempts of a failing record, and between restarts after errors.
	DefaultMinBackoff = 10 * time.Millisecond
	// DefaultMaxBackoff: see DefaultMinBackoff.
	DefaultMaxBackoff = 1 * time.Second
	// DefaultConsumerPrefix starts the durable consumer names of the live
	// side (see ConsumerName).
	DefaultConsumerPrefix = "eskit-projection"
)

// Source is what a runner reads from the event store: the feed (catch-up,
// rebuilds, verification) and single streams (to fill a hole in what the
// broker delivered). Every eskit store is one.
type Source interface {
	eventstore.FeedReader
	ReadStream(ctx context.Context, streamID string, from int64) iter.Seq2[eventstore.Record, error]
}

// Option configures a Runner.
type Option func(*config)

type config struct {
	prefix         string
	js             jetstream.JetStream
	stream         string
	filter         string
	consumerPrefix string
	batchSize      int
	maxWait        time.Duration
	ackWait        time.Duration
	heartbeat      time.Duration
	leaseTTL       time.Duration
	renewEvery     time.Duration
	verifyEvery    time.Duration
	attempts       int
	minBackoff     time.Duration
	maxBackoff     time.Duration
	poll           time.Duration
	wait           eventstore.WaitFunc
	logger         *slog.Logger
	owner          string
	concurrency    int
	telemetry      []telemetry.Option

	// Hooks for tests (see export_test.go).
	beforeCommit func(ctx context.Context, name string)
	keepLease    bool
}

// WithPrefix sets the key prefix of every key the runner writes (default
// none; see ValidatePrefix). Readers must use the same prefix.
func WithPrefix(prefix string) Option { return func(c *config) { c.prefix = prefix } }

// WithJetStream makes the runner follow live events from durable pull
// consumers (one per projection partition) on the given stream (the one
// the outbox relay publishes to). Without it, the runner follows the
// store's feed.
func WithJetStream(js jetstream.JetStream, stream string) Option {
	return func(c *config) { c.js, c.stream = js, stream }
}

// WithFilterSubject restricts the live consumers to a subject filter (for
// example "<prefix>.>" of the relay, or natsevent.CategoryFilter); by default
// they see the whole stream.
func WithFilterSubject(filter string) Option { return func(c *config) { c.filter = filter } }

// WithConsumerPrefix sets the prefix of the durable consumer names
// (DefaultConsumerPrefix by default).
func WithConsumerPrefix(p string) Option { return func(c *config) { c.consumerPrefix = p } }

// WithBatchSize sets the maximum number of records per batch.
func WithBatchSize(n int) Option { return func(c *config) { c.batchSize = n } }

// WithMaxWait sets how long a live batch waits for more messages after its
// first one (DefaultMaxWait): the batch is applied when it is full or that
// long after its first message arrived, whichever comes first, so a record
// waits at most that long for the records batched with it.
func WithMaxWait(d time.Duration) Option { return func(c *config) { c.maxWait = d } }

// WithAckWait sets the live consumer's ack wait (used when the runner
// creates the consumer).
func WithAckWait(d time.Duration) Option { return func(c *config) { c.ackWait = d } }

// WithHeartbeat sets the idle heartbeat of the live side's pull requests
// (DefaultHeartbeat): when two are missed, the consumer is re-created on
// another connection, so a lost NATS node stalls a partition for seconds.
func WithHeartbeat(d time.Duration) Option { return func(c *config) { c.heartbeat = d } }

// WithLease sets the leases' time to live and how often the runner renews
// the leases it holds (and looks for free partitions). renew must be below
// ttl; zero means ttl/3.
func WithLease(ttl, renew time.Duration) Option {
	return func(c *config) { c.leaseTTL, c.renewEvery = ttl, renew }
}

// WithVerifyInterval sets how often a partition that follows the broker
// compares what it applied with the store's feed (DefaultVerifyInterval).
// Duplicates, reordering and holes inside a stream are handled on
// delivery, from per-stream versions; the verification finds what the
// broker never delivered at all (a stream's last event lost, say) and
// applies it from the store. It also runs at once after a message that
// cannot be decoded.
func WithVerifyInterval(d time.Duration) Option { return func(c *config) { c.verifyEvery = d } }

// WithConcurrency sets how many partitions the runner applies at the same
// time (default: every partition it holds).
func WithConcurrency(n int) Option { return func(c *config) { c.concurrency = n } }

// WithRetry sets how many times a failing record is applied before it is
// parked, and the backoff between attempts.
func WithRetry(attempts int, minBackoff, maxBackoff time.Duration) Option {
	return func(c *config) { c.attempts, c.minBackoff, c.maxBackoff = attempts, minBackoff, maxBackoff }
}

// WithPollInterval sets the longest pause between reads of a checkpoint in
// WaitFor, and of the feed when following the store (DefaultPollInterval).
func WithPollInterval(d time.Duration) Option { return func(c *config) { c.poll = d } }

// WithWaiter sets how the runner waits for new records when it follows the
// store's feed. By default it uses the feed's Subscribe when it has one, and
// polls otherwise.
func WithWaiter(wait eventstore.WaitFunc) Option { return func(c *config) { c.wait = wait } }

// WithLogger sets the logger (slog.Default by default).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithOwner names the runner in its lease owner token (a random suffix is
// always added), so operators can tell which process is active.
func WithOwner(name string) Option { return func(c *config) { c.owner = name } }

// Runner runs projections: each partition of each projection applies
// batches of records to its Redis read model, with its own checkpoint and
// lease. Runners in several processes share the partitions. Create it with
// NewRunner, then call Run.
type Runner struct {
	rdb    redis.UniversalClient
	src    Source
	cfg    config
	log    *slog.Logger
	reader *Reader
	token  string
	tel    *runnerTelemetry
	slots  chan struct{} // concurrency limit, nil when unlimited
	pages  pageCache     // feed pages shared by partitions

	projs map[string]*proj
	order []*proj

	acquireScript *redis.Script
	renewScript   *redis.Script
	releaseScript *redis.Script
	switchScript  *redis.Script

	running atomic.Bool
	bgMu    sync.Mutex
	bgCtx   context.Context // Run's context, for background work
	bg      sync.WaitGroup
}

// proj is a projection's runtime state in a runner.
type proj struct {
	p          Projection
	name       string
	k          keys
	partitions int
	parts      []*part

	vmu       sync.Mutex
	lastErr   error
	lastErrAt time.Time
}

// part is one partition of a projection in a runner.
type part struct {
	pr  *proj
	idx int
	log *slog.Logger

	// mu serialises everything that writes the partition: batches,
	// parked-record operations, rebuild pages and namespace switches.
	mu   sync.Mutex
	cur  *nsState // serving namespace while the runner holds the lease
	next *nsState // namespace a rebuild builds, or nil
	// rebuildProgress logs the progress of next's build.
	rebuildProgress *progress
	sessCtx         context.Context // the active session's context
	// replayHint is the highest position this runner committed before its
	// state was found changed under it (Redis rolled back): records up to
	// it are re-applied as replays, so their side effects do not fire
	// twice.
	replayHint eventstore.Position

	// leaseMu keeps renewals (which touch the lease key) from aborting a
	// commit's WATCH: commits share it, renewals take it alone.
	leaseMu sync.RWMutex

	// session bookkeeping, owned by the scheduler
	stop       context.CancelCauseFunc
	done       chan struct{}
	freeFor    time.Time   // when the scheduler first saw the lease free
	handover   atomic.Bool // the session ends after its batch: the partition goes to another runner
	handoverAt time.Time

	vmu     sync.Mutex // guards the view below
	active  bool
	version int64
	ckpt    eventstore.Position
	lastAt  time.Time // RecordedAt of the last applied record
	parked  int
	serving bool          // readers see what the partition applies
	notify  chan struct{} // closed and replaced after every commit
}

// nsState is the applied state of one namespace of one partition.
type nsState struct {
	ns   Namespace
	ckpt checkpoint
	// replay: records are history replayed into the namespace (no side
	// effects) up to replayUntil (all of them when replayUntil is zero).
	replay      bool
	replayUntil eventstore.Position
	// serving is true while the namespace is the active one; it changes
	// only under part.mu.
	serving bool
	// following: a rebuild's namespace that has caught up with the serving
	// one and gets every batch with it; readyAt is the serving namespace's
	// checkpoint then: the new one is ready once verified up to it.
	following bool
	readyAt   eventstore.Position
	blocked   map[string]eventstoreID // stream -> first parked record
	parked    int
	// versions caches the last applied (or parked) version of streams;
	// complete means it holds every stream of the namespace (one built
	// from empty in this session), so a missing stream is at version 0.
	versions map[string]int64
	complete bool
	// lost: the partition of the active namespace is rebuilt in place
	// after losing its data.
	lost bool
	// unswitched: a first build's namespace that readers do not see yet.
	unswitched bool
}

// isReplay reports whether rec is history replayed into st.
func (st *nsState) isReplay(rec eventstore.Record) bool {
	return st.replay && (st.replayUntil.IsZero() || !rec.Position.After(st.replayUntil))
}

// maxCachedStreams bounds nsState.versions; past it the cache is dropped
// and refilled from Redis as batches need it.
const maxCachedStreams = 1 << 20

// NewRunner returns a runner of the given projections on rdb, reading
// history (catch-up, rebuilds, verification) from src.
func NewRunner(rdb redis.UniversalClient, src Source, projections []Projection, opts ...Option) (*Runner, error) {
	cfg := config{
		consumerPrefix: DefaultConsumerPrefix,
		batchSize:      DefaultBatchSize,
		maxWait:        DefaultMaxWait,
		ackWait:        DefaultAckWait,
		heartbeat:      DefaultHeartbeat,
		leaseTTL:       DefaultLeaseTTL,
		verifyEvery:    DefaultVerifyInterval,
		attempts:       DefaultAttempts,
		minBackoff:     DefaultMinBackoff,
		maxBackoff:     DefaultMaxBackoff,
		poll:           DefaultPollInterval,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.renewEvery == 0 {
		cfg.renewEvery = cfg.leaseTTL / 3
	}
	switch {
	case rdb == nil || src == nil:
		return nil, errors.New("projection: NewRunner needs a Redis client and a source")
	case len(projections) == 0:
		return nil, errors.New("projection: NewRunner needs at least one projection")
	case cfg.batchSize <= 0 || cfg.attempts <= 0:
		return nil, errors.New("projection: batch size and attempts must be positive")
	case cfg.maxWait <= 0 || cfg.ackWait <= 0 || cfg.poll <= 0 || cfg.heartbeat <= 0 || cfg.verifyEvery <= 0:
		return nil, errors.New("projection: max wait, ack wait, heartbeat, verify and poll intervals must be positive")
	case cfg.leaseTTL < 10*time.Millisecond || cfg.renewEvery <= 0 || cfg.renewEvery >= cfg.leaseTTL:
		return nil, errors.New("projection: lease needs 0 < renew interval < ttl (ttl at least 10ms)")
	case cfg.minBackoff <= 0 || cfg.maxBackoff < cfg.minBackoff:
		return nil, errors.New("projection: backoff needs 0 < min <= max")
	case cfg.js != nil && cfg.stream == "":
		return nil, errors.New("projection: WithJetStream needs a stream name")
	case cfg.concurrency < 0:
		return nil, errors.New("projection: concurrency must not be negative")
	}
	if err := ValidatePrefix(cfg.prefix); err != nil {
		return nil, err
	}
	if cfg.logger == nil {
		cfg.logger = slog.Default()
	}
	if cfg.wait == nil {
		if sub, ok := src.(subscriber); ok {
			cfg.wait = subscribeWaiter(sub)
		}
	}
	r := &Runner{
		rdb:    rdb,
		src:    src,
		cfg:    cfg,
		log:    cfg.logger.With("component", "projection"),
		reader: &Reader{rdb: rdb, prefix: cfg.prefix, feed: src, poll: cfg.poll},
		token:  ownerToken(cfg.owner),
		projs:  make(map[string]*proj, len(projections)),

		acquireScript: redis.NewScript(acquireLua),
		renewScript:   redis.NewScript(renewLua),
		releaseScript: redis.NewScript(releaseLua),
		switchScript:  redis.NewScript(switchLua),
	}
	if cfg.concurrency > 0 {
		r.slots = make(chan struct{}, cfg.concurrency)
	}
	for _, p := range projections {
		if p == nil {
			return nil, errors.New("projection: nil projection")
		}
		if err := ValidateName(p.Name()); err != nil {
			return nil, err
		}
		if _, dup := r.projs[p.Name()]; dup {
			return nil, fmt.Errorf("projection: two projections named %q", p.Name())
		}
		n := partitionsOf(p)
		if n < 1 || n > eventstore.StreamBuckets {
			return nil, fmt.Errorf("projection %q: %d partitions: want 1 to %d", p.Name(), n, eventstore.StreamBuckets)
		}
		pr := &proj{p: p, name: p.Name(), k: newKeys(cfg.prefix, p.Name()), partitions: n}
		for i := range n {
			pr.parts = append(pr.parts, &part{pr: pr, idx: i, notify: make(chan struct{}),
				log: r.log.With("projection", pr.name, "partition", i)})
		}
		r.projs[pr.name] = pr
		r.order = append(r.order, pr)
	}
	names := make([]string, len(r.order))
	for i, pr := range r.order {
		names[i] = pr.name
	}
	r.tel = newRunnerTelemetry(telemetry.NewConfig(cfg.telemetry...), names)
	return r, nil
}

// eventstoreID is an event ID (kept as the string form used as a field of
// the parked hash).
type eventstoreID = string

func ownerToken(name string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	if name == "" {
		return hex.EncodeToString(b[:])
	}
	return name + "/" + hex.EncodeToString(b[:])
}

// Owner returns the runner's lease owner token.
func (r *Runner) Owner() string { return r.token }

// Reader returns a Reader with the runner's prefix and source.
func (r *Runner) Reader() *Reader { return r.reader }

func (r *Runner) proj(name string) (*proj, error) {
	pr, ok := r.projs[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownProjection, name)
	}
	return pr, nil
}

// Run runs every projection until ctx ends: it registers the projections,
// takes its share of their partitions' leases (see the package doc), and
// for each partition it holds catches up from the store and then follows
// live events. It returns nil when ctx ends (releasing the leases it
// holds), or an error when a projection's stored configuration does not
// match this runner's; a runner runs once.
func (r *Runner) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("projection: Runner.Run called twice")
	}
	r.bgMu.Lock()
	r.bgCtx = ctx
	r.bgMu.Unlock()
	defer r.observe()()
	for _, pr := range r.order {
		if err := r.register(ctx, pr); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ce *ConfigError
			if errors.As(err, &ce) {
				return err
			}
			r.log.Warn("projection: register", "projection", pr.name, "err", err)
		}
	}
	r.schedule(ctx)
	r.bg.Wait()
	return nil
}

// background runs fn on Run's context, tracked so Run waits for it.
func (r *Runner) background(fn func(ctx context.Context)) {
	r.bgMu.Lock()
	ctx := r.bgCtx
	r.bgMu.Unlock()
	if ctx == nil || ctx.Err() != nil {
		return
	}
	r.bg.Go(func() { fn(ctx) })
}

// subscriber is a feed that can tell when records after a Position appear.
type subscriber interface {
	Subscribe(ctx context.Context, after eventstore.Position) iter.Seq2[eventstore.Record, error]
}

// subscribeWaiter turns a subscriber into a WaitFunc: it returns once the
// subscription yields anything after the Position.
func subscribeWaiter(sub subscriber) eventstore.WaitFunc {
	return func(ctx context.Context, after eventstore.Position) error {
		for range sub.Subscribe(ctx, after) {
			break
		}
		return ctx.Err()
	}
}

// activate makes st the serving namespace of the partition's session.
func (pt *part) activate(ctx context.Context, st *nsState) {
	pt.mu.Lock()
	st.serving = true
	pt.cur, pt.next, pt.sessCtx = st, nil, ctx
	pt.mu.Unlock()
	pt.vmu.Lock()
	pt.active = true
	pt.vmu.Unlock()
	pt.publish(st)
}

func (pt *part) deactivate() {
	pt.mu.Lock()
	if pt.cur != nil {
		pt.cur.serving = false
	}
	pt.cur, pt.next, pt.sessCtx = nil, nil, nil
	pt.mu.Unlock()
	pt.vmu.Lock()
	pt.active = false
	close(pt.notify)
	pt.notify = make(chan struct{})
	pt.vmu.Unlock()
}

// publish makes st's progress visible to WaitFor and wakes waiters.
func (pt *part) publish(st *nsState) {
	pt.vmu.Lock()
	pt.version, pt.ckpt = st.ns.Version, st.ckpt.pos
	pt.lastAt, pt.parked = st.ckpt.lastAt, st.parked
	pt.serving = !st.unswitched && !st.lost
	close(pt.notify)
	pt.notify = make(chan struct{})
	pt.vmu.Unlock()
}

// wake returns the channel closed at the next commit, and the local
// checkpoint and version when this runner holds the partition.
func (pt *part) wake() (<-chan struct{}, eventstore.Position, int64, bool) {
	pt.vmu.Lock()
	defer pt.vmu.Unlock()
	return pt.notify, pt.ckpt, pt.version, pt.active && pt.serving
}

// activeState returns the serving namespace and session context, or
// ErrNotActive. The caller holds pt.mu.
func (pt *part) activeState() (*nsState, context.Context, error) {
	if pt.cur == nil {
		return nil, nil, fmt.Errorf("%w: %q partition %d", ErrNotActive, pt.pr.name, pt.idx)
	}
	return pt.cur, pt.sessCtx, nil
}

// recordError keeps err as the projection's last error, locally and in
// Redis.
func (r *Runner) recordError(pr *proj, err error) {
	now := time.Now()
	pr.vmu.Lock()
	pr.lastErr, pr.lastErrAt = err, now
	pr.vmu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = r.rdb.HSet(ctx, pr.k.lastError(), "msg", err.Error(), "at", strconv.FormatInt(now.UnixNano(), 10)).Err()
}

// clearErrorBefore forgets the projection's last error, locally and in
// Redis, when it happened before t: a partition caught up without errors
// since.
func (r *Runner) clearErrorBefore(ctx context.Context, pr *proj, t time.Time) {
	pr.vmu.Lock()
	if pr.lastErr != nil && pr.lastErrAt.Before(t) {
		pr.lastErr, pr.lastErrAt = nil, time.Time{}
	}
	pr.vmu.Unlock()
	_ = r.rdb.Eval(ctx, clearErrorLua, []string{pr.k.lastError()}, t.UnixNano()).Err()
}

const clearErrorLua = `
local at = tonumber(redis.call('HGET', KEYS[1], 'at') or '0')
if at < tonumber(ARGV[1]) then
  return redis.call('DEL', KEYS[1])
end
return 0`

// Active reports whether this runner currently holds at least one of the
// projection's partitions and applies it.
func (r *Runner) Active(name string) bool {
	pr, ok := r.projs[name]
	if !ok {
		return false
	}
	for _, pt := range pr.parts {
		pt.vmu.Lock()
		a := pt.active
		pt.vmu.Unlock()
		if a {
			return true
		}
	}
	return false
}

// Held returns the partitions of the projection this runner holds.
func (r *Runner) Held(name string) []int {
	pr, ok := r.projs[name]
	if !ok {
		return nil
	}
	var out []int
	for _, pt := range pr.parts {
		pt.vmu.Lock()
		if pt.active {
			out = append(out, pt.idx)
		}
		pt.vmu.Unlock()
	}
	return out
}

// Namespace returns the projection's active namespace (see
// Reader.Namespace).
func (r *Runner) Namespace(ctx context.Context, name string) (Namespace, error) {
	return r.reader.Namespace(ctx, name)
}

// Status returns the projection's status (see Reader.Status), with Active
// and this runner's last error.
func (r *Runner) Status(ctx context.Context, name string) (Status, error) {
	pr, err := r.proj(name)
	if err != nil {
		return Status{}, err
	}
	st, err := r.reader.Status(ctx, name)
	st.Active = r.Active(name)
	pr.vmu.Lock()
	if pr.lastErr != nil && pr.lastErrAt.After(st.LastErrorAt) {
		st.LastError, st.LastErrorAt = pr.lastErr.Error(), pr.lastErrAt
	}
	pr.vmu.Unlock()
	return st, err
}

// Parked lists the parked records of the projection's active namespace.
func (r *Runner) Parked(ctx context.Context, name string) ([]ParkedRecord, error) {
	if _, err := r.proj(name); err != nil {
		return nil, err
	}
	return r.reader.Parked(ctx, name)
}

// WaitFor blocks until every partition of the projection's active
// namespace has applied pos (see Reader.WaitFor). Commits of this runner
// wake it at once; progress made by other processes is seen by polling
// Redis.
func (r *Runner) WaitFor(ctx context.Context, name string, pos eventstore.Position) error {
	return r.waitFor(ctx, name, "", pos)
}

// WaitForStream blocks until the partition that applies streamID has
// applied pos: read-your-writes for a query that reads one stream's keys.
func (r *Runner) WaitForStream(ctx context.Context, name, streamID string, pos eventstore.Position) error {
	return r.waitFor(ctx, name, streamID, pos)
}

func (r *Runner) waitFor(ctx context.Context, name, streamID string, pos eventstore.Position) error {
	pr, ok := r.projs[name]
	if !ok {
		if streamID != "" {
			return r.reader.WaitForStream(ctx, name, streamID, pos)
		}
		return r.reader.WaitFor(ctx, name, pos)
	}
	parts := pr.parts
	if streamID != "" {
		parts = []*part{pr.parts[eventstore.StreamPartition(streamID, pr.partitions)]}
	}
	for _, pt := range parts {
		err := waitFor(ctx, name, pos, r.cfg.poll, pt.wake, func(ctx context.Context) (eventstore.Position, bool, error) {
			return r.reader.partitionCheckpoint(ctx, name, func(int) int { return pt.idx })
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// ConsumerName returns the durable consumer name a runner with the given
// consumer prefix uses for a projection with one partition: characters
// other than letters, digits, "-" and "_" become "_", and a hash of the
// name is appended when any was replaced, so distinct names keep distinct
// consumers. Partition p of a projection with P > 1 partitions uses
// ConsumerName(...) + "_p<p>of<P>".
func ConsumerName(consumerPrefix, projection string) string {
	clean := []byte(projection)
	changed := false
	for i, c := range clean {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			clean[i], changed = '_', true
		}
	}
	name := consumerPrefix + "_" + string(clean)
	if changed {
		name += "_" + strconv.FormatUint(uint64(fnv32(projection)), 16)
	}
	return name
}

func partitionConsumerName(consumerPrefix, projection string, p, partitions int) string {
	name := ConsumerName(consumerPrefix, projection)
	if partitions > 1 {
		name += "_p" + strconv.Itoa(p) + "of" + strconv.Itoa(partitions)
	}
	return name
}

func fnv32(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}
