package clustertest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eskit/eskit/internal/infra/localproc"
	"github.com/eskit/eskit/internal/infra/redisconn"
	"github.com/redis/go-redis/v9"
)

// Persistence configures a redis-server's persistence. The zero value is
// none at all: no RDB snapshots, no AOF. See localproc.Persistence for the
// fields.
type Persistence = localproc.Persistence

// debugArgs enables the DEBUG command (on loopback connections) before the
// caller's extra arguments, so tests can DEBUG SLEEP or DEBUG RELOAD.
func debugArgs(extra []string) []string {
	return append([]string{"--enable-debug-command", "local"}, extra...)
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
	lc *localproc.RedisCluster
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
	c := &RedisCluster{lc: localproc.NewRedisCluster(localproc.RedisClusterConfig{
		Server: bin, CLI: cli, Dir: tb.TempDir(),
		Masters: opt.Masters, Replicas: opt.Replicas, NodeTimeout: opt.NodeTimeout,
		Persistence: opt.Persistence, ExtraArgs: debugArgs(opt.ExtraArgs),
	})}
	tb.Cleanup(func() { c.close(tb) })

	ctx, cancel := context.WithTimeout(context.Background(), opt.StartTimeout)
	defer cancel()
	began := time.Now()
	if err := c.lc.Start(ctx); err != nil {
		tb.Fatalf("clustertest: %v", err)
	}
	tb.Logf("clustertest: Redis Cluster of %d masters and %d replicas up in %v: %s",
		opt.Masters, opt.Masters*opt.Replicas, time.Since(began).Round(time.Millisecond), c.URL())
	return c
}

func (c *RedisCluster) close(tb testing.TB) {
	for _, s := range c.lc.Nodes() {
		if err := s.Close(); err != nil {
			tb.Errorf("clustertest: %v", err)
		}
	}
	if tb.Failed() {
		for _, s := range c.lc.Nodes() {
			tb.Logf("clustertest: log of %s:\n%s", s.Name, s.LogTail(30))
		}
	}
}

// Addrs returns every node's host:port, in creation order (the masters
// redis-cli made first).
func (c *RedisCluster) Addrs() []string { return c.lc.Addrs() }

// URL returns the cluster's redis+cluster:// URL with every node as a seed
// (see redisconn).
func (c *RedisCluster) URL() string { return c.lc.URL() }

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

func (c *RedisCluster) node(addr string) (*localproc.RedisServer, error) {
	s, ok := c.lc.Node(addr)
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
	return s.DataDir(), nil
}

// PID returns the process ID of the node, 0 when it is not running.
func (c *RedisCluster) PID(addr string) int {
	s, err := c.node(addr)
	if err != nil || !s.Running() {
		return 0
	}
	return s.PID()
}

// Kill sends SIGKILL to the node and waits until it is gone. Its replica
// takes over after the node timeout.
func (c *RedisCluster) Kill(addr string) error {
	s, err := c.node(addr)
	if err != nil {
		return err
	}
	return wrap(s.Kill())
}

// Stop freezes the node with SIGSTOP: its sockets stay open but it answers
// nothing, like a paused VM. Cont resumes it.
func (c *RedisCluster) Stop(addr string) error {
	s, err := c.node(addr)
	if err != nil {
		return err
	}
	return wrap(s.Signal(syscall.SIGSTOP))
}

// Cont resumes a node frozen by Stop.
func (c *RedisCluster) Cont(addr string) error {
	s, err := c.node(addr)
	if err != nil {
		return err
	}
	return wrap(s.Signal(syscall.SIGCONT))
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
	return wrap(s.Restart(ctx))
}

// WaitHealthy waits until the cluster is settled as seen from every node
// that runs and is not frozen: each reports cluster_state:ok with all 16384
// slots served, sees no running node as failing, agrees with the others on
// which master serves which slots, and each replica's link to its master is
// up.
func (c *RedisCluster) WaitHealthy(ctx context.Context) error {
	if err := c.lc.WaitHealthy(ctx); err != nil {
		return fmt.Errorf("clustertest: Redis Cluster not healthy: %w", err)
	}
	return nil
}

// Masters returns the slot ranges of every master, as the first live node
// reports them (CLUSTER SHARDS).
func (c *RedisCluster) Masters(ctx context.Context) (map[string][]SlotRange, error) {
	var lastErr error
	for _, s := range c.lc.Live() {
		ctl := s.Client()
		if ctl == nil {
			continue
		}
		shards, err := ctl.ClusterShards(ctx).Result()
		if err != nil {
			lastErr = fmt.Errorf("clustertest: %s: CLUSTER SHARDS: %w", s.Addr(), err)
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
	return int(crc) % localproc.ClusterSlots
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
	s *localproc.RedisServer
}

// StartRedis starts a standalone server and waits until it answers.
func StartRedis(tb testing.TB, opt RedisOptions) *RedisNode {
	tb.Helper()
	bin := mustBinary(tb, "redis-server", "redis-server")
	dir := tb.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := localproc.StartRedisServer(ctx, localproc.RedisConfig{Bin: bin, Dir: dir,
		Persistence: opt.Persistence, ExtraArgs: debugArgs(opt.ExtraArgs)})
	if err != nil {
		tb.Fatalf("clustertest: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("clustertest: %v", err)
		}
		if tb.Failed() {
			tb.Logf("clustertest: log of %s:\n%s", s.Name, s.LogTail(30))
		}
	})
	return &RedisNode{s: s}
}

// Addr returns the server's host:port.
func (n *RedisNode) Addr() string { return n.s.Addr() }

// URL returns the server's redis:// URL (database 0).
func (n *RedisNode) URL() string { return "redis://" + n.s.Addr() + "/0" }

// Client returns a new client for the server, closed when tb ends.
func (n *RedisNode) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: n.s.Addr()})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// DataDir returns the server's data directory: dump.rdb, and with
// Persistence.AppendOnly the AOF directory appendonlydir (Redis 7's
// multi-part AOF: a manifest plus base and incremental files; copy the
// whole directory to keep a consistent AOF).
func (n *RedisNode) DataDir() string { return n.s.DataDir() }

// PID returns the server's process ID, 0 when it is not running.
func (n *RedisNode) PID() int {
	if !n.s.Running() {
		return 0
	}
	return n.s.PID()
}

// Kill sends SIGKILL and waits until the server is gone: nothing is
// flushed beyond what the persistence settings already wrote.
func (n *RedisNode) Kill() error { return wrap(n.s.Kill()) }

// Stop freezes the server with SIGSTOP; Cont resumes it.
func (n *RedisNode) Stop() error { return wrap(n.s.Signal(syscall.SIGSTOP)) }

// Cont resumes a server frozen by Stop.
func (n *RedisNode) Cont() error { return wrap(n.s.Signal(syscall.SIGCONT)) }

// Restart starts the server again (killing it first if it runs) on the same
// port with the same data directory, so it loads whatever RDB or AOF is
// there now, and waits until it answers PING (Redis answers -LOADING while
// it loads, which PING reports as an error, so this waits for the load).
func (n *RedisNode) Restart(ctx context.Context) error { return wrap(n.s.Restart(ctx)) }
