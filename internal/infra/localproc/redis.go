package localproc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/internal/infra/redisconn"
)

// ClusterSlots is the number of hash slots of a Redis Cluster.
const ClusterSlots = 16384

// Persistence configures a redis-server's persistence. The zero value is
// none at all: no RDB snapshots, no AOF.
type Persistence struct {
	// AppendOnly enables the AOF (appendonly yes); Redis 7 keeps it in
	// <data dir>/appendonlydir.
	AppendOnly bool
	// AppendFsync is appendfsync: "always", "everysec" (the server's default
	// when empty) or "no".
	AppendFsync string
	// Save is the RDB schedule ("3600 1 300 100"); empty disables RDB
	// snapshots. SAVE and BGSAVE still write <data dir>/dump.rdb on demand.
	Save string
}

func (p Persistence) args() []string {
	args := []string{"--save", p.Save}
	if p.AppendOnly {
		args = append(args, "--appendonly", "yes")
		if p.AppendFsync != "" {
			args = append(args, "--appendfsync", p.AppendFsync)
		}
	} else {
		args = append(args, "--appendonly", "no")
	}
	return args
}

// RedisConfig configures StartRedisServer.
type RedisConfig struct {
	Bin string // redis-server
	// Dir is the parent directory: the server keeps its files in
	// Dir/<port>.
	Dir string
	// Cluster makes a cluster node (cluster-enabled, with a bus port).
	Cluster bool
	// NodeTimeout is cluster-node-timeout (cluster nodes only).
	NodeTimeout time.Duration
	Persistence Persistence
	// ExtraArgs are appended to the redis-server command line.
	ExtraArgs []string
	// PingTimeout, when positive, bounds each wait for the server to answer
	// PING after it starts; otherwise the context alone does.
	PingTimeout time.Duration
	// OnStart, when set, is told the PID of every process started.
	OnStart func(pid int)
}

// RedisServer is one redis-server process with its own port, data
// directory and administrative client. Restart starts it again on the same
// ports with the same data; the embedded Server signals and kills it.
type RedisServer struct {
	Server
	port, busPort int // busPort is 0 for a standalone server
	dataDir       string
	logFile       string
	pingTimeout   time.Duration

	cmu sync.Mutex
	ctl *redis.Client // direct, no retries: for health checks
}

// newRedisServer prepares (does not start) a server on port (and busPort
// for a cluster node) with its data under cfg.Dir/<port>.
func newRedisServer(cfg RedisConfig, port, busPort int) (*RedisServer, error) {
	dir := filepath.Join(cfg.Dir, strconv.Itoa(port))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	s := &RedisServer{port: port, busPort: busPort, dataDir: dir, logFile: filepath.Join(dir, "redis.log"), pingTimeout: cfg.PingTimeout}
	args := []string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--dir", dir,
		"--daemonize", "no",
		"--logfile", s.logFile,
		// A replica's full sync starts at once instead of after the
		// default 5 s wait for more replicas to share the transfer.
		"--repl-diskless-sync-delay", "0",
	}
	name := "redis " + s.Addr()
	if busPort != 0 {
		name = "redis cluster node " + s.Addr()
		args = append(args,
			"--cluster-enabled", "yes",
			"--cluster-config-file", fmt.Sprintf("nodes-%d.conf", port),
			"--cluster-port", strconv.Itoa(busPort),
			"--cluster-node-timeout", strconv.FormatInt(cfg.NodeTimeout.Milliseconds(), 10),
		)
	}
	args = append(args, cfg.Persistence.args()...)
	args = append(args, cfg.ExtraArgs...)
	s.Server = Server{Name: name, Bin: cfg.Bin, Args: args, Dir: dir, Out: filepath.Join(dir, "stdout.log"), OnStart: cfg.OnStart}
	return s, nil
}

// StartRedisServer starts a server on fresh ports and waits until it
// answers PING, trying new ports when one was taken between choosing and
// binding it.
func StartRedisServer(ctx context.Context, cfg RedisConfig) (*RedisServer, error) {
	var lastErr error
	for range 5 {
		n := 1
		if cfg.Cluster {
			n = 2
		}
		ports, err := FreePorts(n)
		if err != nil {
			return nil, err
		}
		bus := 0
		if cfg.Cluster {
			bus = ports[1]
		}
		s, err := newRedisServer(cfg, ports[0], bus)
		if err != nil {
			return nil, err
		}
		if lastErr = s.run(ctx); lastErr == nil {
			return s, nil
		}
		if !errors.Is(lastErr, ErrPortTaken) {
			return nil, lastErr
		}
	}
	return nil, lastErr
}

// Addr returns the server's host:port.
func (s *RedisServer) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// DataDir returns the server's data directory (dump.rdb, appendonlydir,
// and for a cluster node nodes-<port>.conf).
func (s *RedisServer) DataDir() string { return s.dataDir }

// LogTail returns the last n lines of the server's output and log file.
func (s *RedisServer) LogTail(n int) string { return s.Tail(n, s.logFile) }

// Client returns the administrative client of the current process (direct,
// no retries), nil while the server is starting or after Close.
func (s *RedisServer) Client() *redis.Client {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	return s.ctl
}

// newCtl replaces the administrative client. A fresh one per process start
// matters: a go-redis pool that failed PoolSize dials in a row (while the
// server was down) fails fast for up to a second before it dials again.
func (s *RedisServer) newCtl() {
	c := redis.NewClient(&redis.Options{
		Addr:            s.Addr(),
		DialTimeout:     time.Second,
		ReadTimeout:     2 * time.Second,
		WriteTimeout:    2 * time.Second,
		MaxRetries:      -1,
		DialerRetries:   1,
		PoolSize:        4,
		DisableIdentity: true,
	})
	s.cmu.Lock()
	old := s.ctl
	s.ctl = c
	s.cmu.Unlock()
	if old != nil {
		_ = old.Close()
	}
}

func (s *RedisServer) closeCtl() {
	s.cmu.Lock()
	c := s.ctl
	s.ctl = nil
	s.cmu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

// Close kills the server (by PID) and closes its administrative client.
func (s *RedisServer) Close() error {
	err := s.Kill()
	s.closeCtl()
	return err
}

// run starts the process and waits until it answers PING with PONG (not
// -LOADING).
func (s *RedisServer) run(ctx context.Context) error {
	if err := s.Start(); err != nil {
		return err
	}
	wctx := ctx
	if s.pingTimeout > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, s.pingTimeout)
		defer cancel()
	}
	err := WaitFor(wctx, 10*time.Millisecond, s.Exited(), func(ctx context.Context) error {
		return probeRedis(ctx, s.Addr())
	})
	if err == nil {
		s.newCtl()
		return nil
	}
	_ = s.Kill()
	if strings.Contains(s.LogTail(20), "Address already in use") {
		return fmt.Errorf("%w: %s", ErrPortTaken, s.Name)
	}
	return fmt.Errorf("%s did not come up: %w\n%s", s.Name, err, s.LogTail(20))
}

// probeRedis sends one PING on a new connection and wants +PONG (a plain
// connection per try: a client's pool would log every refused dial while
// the server starts).
func probeRedis(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if line = strings.TrimSpace(line); line != "+PONG" {
		return fmt.Errorf("PING: %s", line)
	}
	return nil
}

// Restart kills the server if it runs and starts it again with the same
// ports, directory and configuration, and waits until it answers PING. It
// retries for a while when the port is still held (by a dying process or a
// stranger).
func (s *RedisServer) Restart(ctx context.Context) error {
	if err := s.Kill(); err != nil {
		return err
	}
	for {
		err := s.run(ctx)
		if err == nil || !errors.Is(err, ErrPortTaken) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("restart %s: %w", s.Name, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// RedisClusterConfig configures NewRedisCluster.
type RedisClusterConfig struct {
	Server string // redis-server
	CLI    string // redis-cli
	// Dir is the parent directory: node files go to Dir/<port>.
	Dir string
	// Masters (at least 3) and Replicas per master.
	Masters, Replicas int
	// NodeTimeout is cluster-node-timeout.
	NodeTimeout time.Duration
	// Persistence, ExtraArgs, PingTimeout and OnStart apply to every node
	// (see RedisConfig).
	Persistence Persistence
	ExtraArgs   []string
	PingTimeout time.Duration
	OnStart     func(pid int)
}

// RedisCluster is a Redis Cluster of local redis-server processes on
// loopback ports. Once Start has returned, its methods are safe for
// concurrent use.
type RedisCluster struct {
	cfg   RedisClusterConfig
	nodes []*RedisServer // in creation order: masters first
	index map[string]*RedisServer
}

// NewRedisCluster returns a cluster that Start starts. Close kills whatever
// nodes Start started, also when it failed.
func NewRedisCluster(cfg RedisClusterConfig) *RedisCluster {
	return &RedisCluster{cfg: cfg, index: map[string]*RedisServer{}}
}

// Start starts Masters*(1+Replicas) nodes, creates the cluster with
// `redis-cli --cluster create` and waits until it is healthy (see
// WaitHealthy). ctx bounds all of it.
func (c *RedisCluster) Start(ctx context.Context) error {
	cfg := RedisConfig{Bin: c.cfg.Server, Dir: c.cfg.Dir, Cluster: true, NodeTimeout: c.cfg.NodeTimeout,
		Persistence: c.cfg.Persistence, ExtraArgs: c.cfg.ExtraArgs, PingTimeout: c.cfg.PingTimeout, OnStart: c.cfg.OnStart}
	for range c.cfg.Masters * (1 + c.cfg.Replicas) {
		s, err := StartRedisServer(ctx, cfg)
		if err != nil {
			return err
		}
		c.nodes = append(c.nodes, s)
		c.index[s.Addr()] = s
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(c.cfg.Replicas), "--cluster-yes")
	out, err := exec.CommandContext(ctx, c.cfg.CLI, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("redis-cli --cluster create: %w\n%s", err, out)
	}
	if err := c.WaitHealthy(ctx); err != nil {
		return fmt.Errorf("the Redis Cluster did not become healthy: %w", err)
	}
	return nil
}

// Close kills every node by PID and closes their administrative clients.
func (c *RedisCluster) Close() error {
	var errs []error
	for _, s := range c.nodes {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}

// Nodes returns every node, in creation order (the masters redis-cli made
// first).
func (c *RedisCluster) Nodes() []*RedisServer { return c.nodes }

// Node returns the node at addr.
func (c *RedisCluster) Node(addr string) (*RedisServer, bool) {
	s, ok := c.index[addr]
	return s, ok
}

// Addrs returns every node's host:port, in creation order.
func (c *RedisCluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, s := range c.nodes {
		addrs[i] = s.Addr()
	}
	return addrs
}

// URL returns the cluster's redis+cluster:// URL with every node as a seed
// (see redisconn).
func (c *RedisCluster) URL() string {
	return redisconn.SchemeCluster + "://" + strings.Join(c.Addrs(), ",")
}

// Live returns the nodes that run and are not frozen.
func (c *RedisCluster) Live() []*RedisServer {
	var out []*RedisServer
	for _, s := range c.nodes {
		if s.Running() && !s.Stopped() {
			out = append(out, s)
		}
	}
	return out
}

// WaitHealthy waits until the cluster is settled as seen from every node
// that runs and is not frozen: each reports cluster_state:ok with all 16384
// slots served, sees no running node as failing, agrees with the others on
// which master serves which slots, and each replica's link to its master is
// up. Its error is ctx's with the last check's.
func (c *RedisCluster) WaitHealthy(ctx context.Context) error {
	return WaitFor(ctx, 50*time.Millisecond, nil, c.healthy)
}

func (c *RedisCluster) healthy(ctx context.Context) error {
	live := c.Live()
	if len(live) == 0 {
		return errors.New("no node is running")
	}
	running := map[string]bool{}
	for _, s := range c.nodes {
		if s.Running() {
			running[s.Addr()] = true
		}
	}
	var want string
	for _, s := range live {
		ctl := s.Client()
		if ctl == nil {
			return fmt.Errorf("%s is starting", s.Addr())
		}
		info, err := ctl.ClusterInfo(ctx).Result()
		if err != nil {
			return fmt.Errorf("%s: CLUSTER INFO: %w", s.Addr(), err)
		}
		fields := infoFields(info)
		if fields["cluster_state"] != "ok" || fields["cluster_slots_ok"] != strconv.Itoa(ClusterSlots) {
			return fmt.Errorf("%s: cluster_state:%s cluster_slots_ok:%s", s.Addr(), fields["cluster_state"], fields["cluster_slots_ok"])
		}
		text, err := ctl.ClusterNodes(ctx).Result()
		if err != nil {
			return fmt.Errorf("%s: CLUSTER NODES: %w", s.Addr(), err)
		}
		nodes := parseClusterNodes(text)
		for _, n := range nodes {
			if running[n.addr] && (n.flags["fail"] || n.flags["fail?"] || n.flags["handshake"] || n.flags["noaddr"]) {
				return fmt.Errorf("%s sees %s as %s", s.Addr(), n.addr, strings.Join(n.flagList, ","))
			}
		}
		for a := range running {
			if !containsNode(nodes, a) {
				return fmt.Errorf("%s does not know %s yet", s.Addr(), a)
			}
		}
		view := slotView(nodes)
		if want == "" {
			want = view
		} else if view != want {
			return fmt.Errorf("nodes disagree on the slot map: %s vs %s", want, view)
		}
		repl, err := ctl.Info(ctx, "replication").Result()
		if err != nil {
			return fmt.Errorf("%s: INFO replication: %w", s.Addr(), err)
		}
		r := infoFields(repl)
		if r["role"] == "slave" && r["master_link_status"] != "up" {
			return fmt.Errorf("%s: replica link to %s:%s is %s", s.Addr(), r["master_host"], r["master_port"], r["master_link_status"])
		}
	}
	return nil
}

// clusterNode is one line of CLUSTER NODES.
type clusterNode struct {
	id, addr string
	flags    map[string]bool
	flagList []string
	master   string // master's id for a replica, "-" for a master
	slots    []string
}

func parseClusterNodes(text string) []clusterNode {
	var out []clusterNode
	for line := range strings.SplitSeq(strings.TrimSpace(text), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@") // ip:port@cport[,hostname]
		n := clusterNode{id: f[0], addr: addr, flags: map[string]bool{}, flagList: strings.Split(f[2], ","), master: f[3]}
		for _, fl := range n.flagList {
			n.flags[fl] = true
		}
		for _, sl := range f[8:] {
			if !strings.HasPrefix(sl, "[") { // skip migrating/importing markers
				n.slots = append(n.slots, sl)
			}
		}
		out = append(out, n)
	}
	return out
}

func containsNode(nodes []clusterNode, addr string) bool {
	for _, n := range nodes {
		if n.addr == addr {
			return true
		}
	}
	return false
}

// slotView renders which address serves which slots, for comparing views.
func slotView(nodes []clusterNode) string {
	var parts []string
	for _, n := range nodes {
		if n.flags["master"] && len(n.slots) > 0 {
			parts = append(parts, n.addr+"="+strings.Join(n.slots, " "))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

// infoFields parses "key:value" lines of INFO and CLUSTER INFO.
func infoFields(text string) map[string]string {
	m := map[string]string{}
	for line := range strings.SplitSeq(text, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok {
			m[k] = v
		}
	}
	return m
}
