package clustertest

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
	"syscall"
	"testing"
	"time"

	"github.com/eskit/eskit/internal/redisconn"
	"github.com/redis/go-redis/v9"
)

// Redis Cluster has 16384 hash slots.
const clusterSlots = 16384

// errPortTaken reports that a server could not bind its ports.
var errPortTaken = errors.New("clustertest: port already in use")

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

// redisServer is one redis-server process with its own port, data
// directory and administrative client.
type redisServer struct {
	proc
	port, busPort int // busPort is 0 for a standalone server
	dataDir       string
	logFile       string
	ctl           *redis.Client // direct, no retries: for health checks; guarded by proc.mu
}

func (s *redisServer) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// newRedisServer prepares (does not start) a server on port (and busPort
// for a cluster node) with its data under parent/<port>.
func newRedisServer(bin, parent string, port, busPort int, nodeTimeout time.Duration, pers Persistence, extra []string) (*redisServer, error) {
	dir := filepath.Join(parent, strconv.Itoa(port))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("clustertest: %w", err)
	}
	s := &redisServer{port: port, busPort: busPort, dataDir: dir, logFile: filepath.Join(dir, "redis.log")}
	args := []string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--dir", dir,
		"--daemonize", "no",
		"--logfile", s.logFile,
		"--enable-debug-command", "local",
		// A replica's full sync starts at once instead of after the
		// default 5 s wait for more replicas to share the transfer.
		"--repl-diskless-sync-delay", "0",
	}
	name := "redis " + s.addr()
	if busPort != 0 {
		name = "redis cluster node " + s.addr()
		args = append(args,
			"--cluster-enabled", "yes",
			"--cluster-config-file", fmt.Sprintf("nodes-%d.conf", port),
			"--cluster-port", strconv.Itoa(busPort),
			"--cluster-node-timeout", strconv.FormatInt(nodeTimeout.Milliseconds(), 10),
		)
	}
	args = append(args, pers.args()...)
	args = append(args, extra...)
	s.proc = proc{name: name, bin: bin, args: args, dir: dir, out: filepath.Join(dir, "stdout.log")}
	return s, nil
}

// client returns the administrative client of the current process.
func (s *redisServer) client() *redis.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ctl
}

// newCtl replaces the administrative client. A fresh one per process start
// matters: a go-redis pool that failed PoolSize dials in a row (while the
// server was down) fails fast for up to a second before it dials again.
func (s *redisServer) newCtl() {
	c := redis.NewClient(&redis.Options{
		Addr:            s.addr(),
		DialTimeout:     time.Second,
		ReadTimeout:     2 * time.Second,
		WriteTimeout:    2 * time.Second,
		MaxRetries:      -1,
		DialerRetries:   1,
		PoolSize:        4,
		DisableIdentity: true,
	})
	s.mu.Lock()
	old := s.ctl
	s.ctl = c
	s.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
}

func (s *redisServer) closeCtl() {
	s.mu.Lock()
	c := s.ctl
	s.ctl = nil
	s.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

// run starts the process and waits until it answers PING with PONG (not
// -LOADING).
func (s *redisServer) run(ctx context.Context) error {
	if err := s.start(); err != nil {
		return err
	}
	err := waitFor(ctx, 10*time.Millisecond, s.exited(), func(ctx context.Context) error {
		return probeRedis(ctx, s.addr())
	})
	if err == nil {
		s.newCtl()
		return nil
	}
	_ = s.kill()
	if strings.Contains(s.tail(20, s.logFile), "Address already in use") {
		return fmt.Errorf("%w: %s", errPortTaken, s.name)
	}
	return fmt.Errorf("clustertest: %s did not come up: %w\n%s", s.name, err, s.tail(20, s.logFile))
}

// probeRedis sends one PING on a new connection and wants +PONG.
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

// startRedisServer creates and runs a server on fresh ports, trying new
// ports when one was taken between choosing and binding it.
func startRedisServer(ctx context.Context, bin, parent string, cluster bool, nodeTimeout time.Duration, pers Persistence, extra []string) (*redisServer, error) {
	var lastErr error
	for range 5 {
		n := 1
		if cluster {
			n = 2
		}
		ports, err := freePorts(n)
		if err != nil {
			return nil, err
		}
		bus := 0
		if cluster {
			bus = ports[1]
		}
		s, err := newRedisServer(bin, parent, ports[0], bus, nodeTimeout, pers, extra)
		if err != nil {
			return nil, err
		}
		if lastErr = s.run(ctx); lastErr == nil {
			return s, nil
		}
		if !errors.Is(lastErr, errPortTaken) {
			return nil, lastErr
		}
	}
	return nil, lastErr
}

// restart kills the server if it runs and starts it again with the same
// ports, directory and configuration. It retries for a while when the port
// is still held (by a dying process or a stranger).
func (s *redisServer) restart(ctx context.Context) error {
	if err := s.kill(); err != nil {
		return err
	}
	for {
		err := s.run(ctx)
		if err == nil || !errors.Is(err, errPortTaken) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("clustertest: restart %s: %w", s.name, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// SlotRange is an inclusive range of hash slots.
type SlotRange struct{ Start, End int }

// RedisClusterOptions configures StartRedisCluster. The zero value is 3
// masters with one replica each, a node timeout of 2 s and no persistence.
type RedisClusterOptions struct {
	// Masters is the number of masters; default 3 (the minimum Redis
	// Cluster accepts).
	Masters int
	// Replicas is the number of replicas per master; default 1, negative
	// for none.
	Replicas int
	// NodeTimeout is cluster-node-timeout: how long a node may be
	// unreachable before it is failed over. Default 2 s; failover tests use
	// 1 s. Below 1 s a busy test machine fails nodes over spuriously.
	NodeTimeout time.Duration
	// Persistence applies to every node.
	Persistence Persistence
	// ExtraArgs are appended to every redis-server command line, e.g.
	// {"--cluster-require-full-coverage", "no"}.
	ExtraArgs []string
	// StartTimeout bounds the start-up (processes, cluster create, health);
	// default 60 s.
	StartTimeout time.Duration
}

// RedisCluster is a Redis Cluster of local redis-server processes on
// loopback ports, each with its own directory under the test's temp dir.
// Every process is killed (by PID) when the test ends.
//
// Its methods are safe for concurrent use (a test may kill a node from one
// goroutine while others load the cluster), and return errors rather than
// failing the test, so they can be called from any goroutine.
type RedisCluster struct {
	opt   RedisClusterOptions
	cli   string
	nodes []*redisServer // in creation order: masters first
	index map[string]*redisServer
}

// StartRedisCluster starts a cluster and waits until it is healthy (see
// WaitHealthy). It fails tb when it cannot, naming the Debian package to
// install when redis-server or redis-cli is missing.
func StartRedisCluster(tb testing.TB, opt RedisClusterOptions) *RedisCluster {
	tb.Helper()
	if opt.Masters == 0 {
		opt.Masters = 3
	}
	switch {
	case opt.Replicas == 0:
		opt.Replicas = 1
	case opt.Replicas < 0:
		opt.Replicas = 0
	}
	if opt.NodeTimeout <= 0 {
		opt.NodeTimeout = 2 * time.Second
	}
	if opt.StartTimeout <= 0 {
		opt.StartTimeout = 60 * time.Second
	}
	if opt.Masters < 3 {
		tb.Fatalf("clustertest: a Redis Cluster needs at least 3 masters, got %d", opt.Masters)
	}
	bin := mustBinary(tb, "redis-server", "redis-server")
	cli := mustBinary(tb, "redis-cli", "redis-tools")
	dir := tb.TempDir()
	c := &RedisCluster{opt: opt, cli: cli, index: map[string]*redisServer{}}
	tb.Cleanup(func() { c.close(tb) })

	ctx, cancel := context.WithTimeout(context.Background(), opt.StartTimeout)
	defer cancel()
	began := time.Now()
	for range opt.Masters * (1 + opt.Replicas) {
		s, err := startRedisServer(ctx, bin, dir, true, opt.NodeTimeout, opt.Persistence, opt.ExtraArgs)
		if err != nil {
			tb.Fatalf("clustertest: %v", err)
		}
		c.nodes = append(c.nodes, s)
		c.index[s.addr()] = s
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(opt.Replicas), "--cluster-yes")
	out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("clustertest: redis-cli --cluster create: %v\n%s", err, out)
	}
	if err := c.WaitHealthy(ctx); err != nil {
		tb.Fatalf("clustertest: %v", err)
	}
	tb.Logf("clustertest: Redis Cluster of %d masters and %d replicas up in %v: %s",
		opt.Masters, opt.Masters*opt.Replicas, time.Since(began).Round(time.Millisecond), c.URL())
	return c
}

func (c *RedisCluster) close(tb testing.TB) {
	for _, s := range c.nodes {
		if err := s.kill(); err != nil {
			tb.Errorf("clustertest: %v", err)
		}
		s.closeCtl()
	}
	if tb.Failed() {
		for _, s := range c.nodes {
			tb.Logf("clustertest: log of %s:\n%s", s.name, s.tail(30, s.logFile))
		}
	}
}

// Addrs returns every node's host:port, in creation order (the masters
// redis-cli made first).
func (c *RedisCluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, s := range c.nodes {
		addrs[i] = s.addr()
	}
	return addrs
}

// URL returns the cluster's redis+cluster:// URL with every node as a seed
// (see redisconn).
func (c *RedisCluster) URL() string {
	return redisconn.SchemeCluster + "://" + strings.Join(c.Addrs(), ",")
}

// Client opens a client on URL with redisconn.Open (and opts) and closes it
// when tb ends.
func (c *RedisCluster) Client(tb testing.TB, opts ...redisconn.Option) redis.UniversalClient {
	tb.Helper()
	cl, err := redisconn.Open(context.Background(), c.URL(), opts...)
	if err != nil {
		tb.Fatalf("clustertest: %v", err)
	}
	tb.Cleanup(func() { _ = cl.Close() })
	return cl
}

// NodeClient returns a client connected to the node at addr alone (no
// cluster routing), for inspecting one node; it is closed when tb ends.
func (c *RedisCluster) NodeClient(tb testing.TB, addr string) *redis.Client {
	tb.Helper()
	if _, err := c.node(addr); err != nil {
		tb.Fatal(err)
	}
	nc := redis.NewClient(&redis.Options{Addr: addr})
	tb.Cleanup(func() { _ = nc.Close() })
	return nc
}

func (c *RedisCluster) node(addr string) (*redisServer, error) {
	s, ok := c.index[addr]
	if !ok {
		return nil, fmt.Errorf("clustertest: no node %s in this cluster (nodes: %s)", addr, strings.Join(c.Addrs(), ", "))
	}
	return s, nil
}

// DataDir returns the node's data directory (nodes-<port>.conf, dump.rdb,
// appendonlydir).
func (c *RedisCluster) DataDir(addr string) (string, error) {
	s, err := c.node(addr)
	if err != nil {
		return "", err
	}
	return s.dataDir, nil
}

// PID returns the process ID of the node, 0 when it is not running.
func (c *RedisCluster) PID(addr string) int {
	s, err := c.node(addr)
	if err != nil || !s.running() {
		return 0
	}
	return s.pid()
}

// Kill sends SIGKILL to the node and waits until it is gone. Its replica
// takes over after the node timeout.
func (c *RedisCluster) Kill(addr string) error {
	s, err := c.node(addr)
	if err != nil {
		return err
	}
	return s.kill()
}

// Stop freezes the node with SIGSTOP: its sockets stay open but it answers
// nothing, like a paused VM. Cont resumes it.
func (c *RedisCluster) Stop(addr string) error {
	s, err := c.node(addr)
	if err != nil {
		return err
	}
	return s.signal(syscall.SIGSTOP)
}

// Cont resumes a node frozen by Stop.
func (c *RedisCluster) Cont(addr string) error {
	s, err := c.node(addr)
	if err != nil {
		return err
	}
	return s.signal(syscall.SIGCONT)
}

// Restart starts the node again on the same port with the same directory
// and nodes-<port>.conf (killing it first if it still runs), so it rejoins
// the cluster: a master that was failed over comes back as a replica of its
// successor. It returns once the node answers PING; call WaitHealthy to
// wait for the cluster to take it back.
func (c *RedisCluster) Restart(ctx context.Context, addr string) error {
	s, err := c.node(addr)
	if err != nil {
		return err
	}
	return s.restart(ctx)
}

// live returns the nodes that run and are not frozen.
func (c *RedisCluster) live() []*redisServer {
	var out []*redisServer
	for _, s := range c.nodes {
		if s.running() && !s.isStopped() {
			out = append(out, s)
		}
	}
	return out
}

// WaitHealthy waits until the cluster is settled as seen from every node
// that runs and is not frozen: each reports cluster_state:ok with all 16384
// slots served, sees no running node as failing, agrees with the others on
// which master serves which slots, and each replica's link to its master is
// up.
func (c *RedisCluster) WaitHealthy(ctx context.Context) error {
	err := waitFor(ctx, 50*time.Millisecond, nil, c.healthy)
	if err != nil {
		return fmt.Errorf("clustertest: Redis Cluster not healthy: %w", err)
	}
	return nil
}

func (c *RedisCluster) healthy(ctx context.Context) error {
	live := c.live()
	if len(live) == 0 {
		return errors.New("no node is running")
	}
	running := map[string]bool{}
	for _, s := range c.nodes {
		if s.running() {
			running[s.addr()] = true
		}
	}
	var want string
	for _, s := range live {
		ctl := s.client()
		if ctl == nil {
			return fmt.Errorf("%s is starting", s.addr())
		}
		info, err := ctl.ClusterInfo(ctx).Result()
		if err != nil {
			return fmt.Errorf("%s: CLUSTER INFO: %w", s.addr(), err)
		}
		fields := infoFields(info)
		if fields["cluster_state"] != "ok" || fields["cluster_slots_ok"] != strconv.Itoa(clusterSlots) {
			return fmt.Errorf("%s: cluster_state:%s cluster_slots_ok:%s", s.addr(), fields["cluster_state"], fields["cluster_slots_ok"])
		}
		text, err := ctl.ClusterNodes(ctx).Result()
		if err != nil {
			return fmt.Errorf("%s: CLUSTER NODES: %w", s.addr(), err)
		}
		nodes := parseClusterNodes(text)
		for _, n := range nodes {
			if running[n.addr] && (n.flags["fail"] || n.flags["fail?"] || n.flags["handshake"] || n.flags["noaddr"]) {
				return fmt.Errorf("%s sees %s as %s", s.addr(), n.addr, strings.Join(n.flagList, ","))
			}
		}
		for a := range running {
			if !containsNode(nodes, a) {
				return fmt.Errorf("%s does not know %s yet", s.addr(), a)
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
			return fmt.Errorf("%s: INFO replication: %w", s.addr(), err)
		}
		r := infoFields(repl)
		if r["role"] == "slave" && r["master_link_status"] != "up" {
			return fmt.Errorf("%s: replica link to %s:%s is %s", s.addr(), r["master_host"], r["master_port"], r["master_link_status"])
		}
	}
	return nil
}

// Masters returns the slot ranges of every master, as the first live node
// reports them (CLUSTER SHARDS).
func (c *RedisCluster) Masters(ctx context.Context) (map[string][]SlotRange, error) {
	var lastErr error
	for _, s := range c.live() {
		ctl := s.client()
		if ctl == nil {
			continue
		}
		shards, err := ctl.ClusterShards(ctx).Result()
		if err != nil {
			lastErr = fmt.Errorf("clustertest: %s: CLUSTER SHARDS: %w", s.addr(), err)
			continue
		}
		m := map[string][]SlotRange{}
		for _, sh := range shards {
			if len(sh.Slots) == 0 {
				continue
			}
			for _, n := range sh.Nodes {
				if n.Role != "master" {
					continue
				}
				a := net.JoinHostPort(n.IP, strconv.FormatInt(n.Port, 10))
				for _, r := range sh.Slots {
					m[a] = append(m[a], SlotRange{Start: int(r.Start), End: int(r.End)})
				}
			}
		}
		for _, r := range m {
			sort.Slice(r, func(i, j int) bool { return r[i].Start < r[j].Start })
		}
		return m, nil
	}
	if lastErr == nil {
		lastErr = errors.New("clustertest: no node is running")
	}
	return nil, lastErr
}

// MasterOf returns the address of the master that serves key's slot.
func (c *RedisCluster) MasterOf(ctx context.Context, key string) (string, error) {
	masters, err := c.Masters(ctx)
	if err != nil {
		return "", err
	}
	slot := KeySlot(key)
	for addr, ranges := range masters {
		for _, r := range ranges {
			if slot >= r.Start && slot <= r.End {
				return addr, nil
			}
		}
	}
	return "", fmt.Errorf("clustertest: no master serves slot %d (key %q)", slot, key)
}

// KeySlot returns the Redis Cluster hash slot of key: CRC16 (XMODEM) of the
// key, or of its hash tag (the text between the first "{" and the next
// "}", when not empty), modulo 16384.
func KeySlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for k := 0; k < len(key); k++ {
		crc ^= uint16(key[k]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % clusterSlots
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

// RedisOptions configures StartRedis.
type RedisOptions struct {
	Persistence Persistence
	// ExtraArgs are appended to the redis-server command line.
	ExtraArgs []string
}

// RedisNode is a standalone local redis-server on a loopback port, with its
// own data directory, for tests that must not touch the shared server (for
// example to restart it from an older RDB or AOF). It is killed when the
// test ends. Its methods are safe for concurrent use.
type RedisNode struct {
	s *redisServer
}

// StartRedis starts a standalone server and waits until it answers.
func StartRedis(tb testing.TB, opt RedisOptions) *RedisNode {
	tb.Helper()
	bin := mustBinary(tb, "redis-server", "redis-server")
	dir := tb.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := startRedisServer(ctx, bin, dir, false, 0, opt.Persistence, opt.ExtraArgs)
	if err != nil {
		tb.Fatalf("clustertest: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.kill(); err != nil {
			tb.Errorf("clustertest: %v", err)
		}
		s.closeCtl()
		if tb.Failed() {
			tb.Logf("clustertest: log of %s:\n%s", s.name, s.tail(30, s.logFile))
		}
	})
	return &RedisNode{s: s}
}

// Addr returns the server's host:port.
func (n *RedisNode) Addr() string { return n.s.addr() }

// URL returns the server's redis:// URL (database 0).
func (n *RedisNode) URL() string { return "redis://" + n.s.addr() + "/0" }

// Client returns a new client for the server, closed when tb ends.
func (n *RedisNode) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: n.s.addr()})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// DataDir returns the server's data directory: dump.rdb, and with
// Persistence.AppendOnly the AOF directory appendonlydir (Redis 7's
// multi-part AOF: a manifest plus base and incremental files; copy the
// whole directory to keep a consistent AOF).
func (n *RedisNode) DataDir() string { return n.s.dataDir }

// PID returns the server's process ID, 0 when it is not running.
func (n *RedisNode) PID() int {
	if !n.s.running() {
		return 0
	}
	return n.s.pid()
}

// Kill sends SIGKILL and waits until the server is gone: nothing is
// flushed beyond what the persistence settings already wrote.
func (n *RedisNode) Kill() error { return n.s.kill() }

// Stop freezes the server with SIGSTOP; Cont resumes it.
func (n *RedisNode) Stop() error { return n.s.signal(syscall.SIGSTOP) }

// Cont resumes a server frozen by Stop.
func (n *RedisNode) Cont() error { return n.s.signal(syscall.SIGCONT) }

// Restart starts the server again (killing it first if it runs) on the same
// port with the same data directory, so it loads whatever RDB or AOF is
// there now, and waits until it answers PING (Redis answers -LOADING while
// it loads, which PING reports as an error, so this waits for the load).
func (n *RedisNode) Restart(ctx context.Context) error { return n.s.restart(ctx) }
