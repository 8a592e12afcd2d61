package clustertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eskit/eskit/internal/infra/localproc"
)

// ErrNoLeader reports a stream or consumer without an elected leader.
var ErrNoLeader = errors.New("clustertest: no leader elected")

// NATSClusterOptions configures StartNATSCluster and
// StartEmbeddedNATSCluster. The zero value is 3 nodes.
type NATSClusterOptions struct {
	// Nodes is the number of servers; default 3.
	Nodes int
	// ExtraConfig is appended to every nats-server configuration file
	// (StartNATSCluster only), e.g. "max_payload: 2MB".
	ExtraConfig string
	// StartTimeout bounds the start-up, JetStream readiness included;
	// default 60 s.
	StartTimeout time.Duration
}

func (o *NATSClusterOptions) defaults() {
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 60 * time.Second
	}
}

// natsCommon is what both cluster flavours share: names, URLs, a helper
// connection and the JetStream queries.
type natsCommon struct {
	clusterName string
	names       []string // server names, by node index
	clientPorts []int
	routePorts  []int

	mu sync.Mutex
	nc *nats.Conn // helper connection to the whole cluster, made on first use
}

func newNATSCommon(n int) (*natsCommon, error) {
	var b [4]byte
	_, _ = rand.Read(b[:])
	c := &natsCommon{clusterName: "clustertest_" + hex.EncodeToString(b[:])}
	for i := range n {
		c.names = append(c.names, "n"+strconv.Itoa(i))
	}
	if err := c.newPorts(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *natsCommon) newPorts() error {
	ports, err := localproc.FreePorts(2 * len(c.names))
	if err != nil {
		return wrap(err)
	}
	c.clientPorts, c.routePorts = ports[:len(c.names)], ports[len(c.names):]
	return nil
}

func (c *natsCommon) clientURL(i int) string {
	return "nats://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(c.clientPorts[i]))
}

func (c *natsCommon) routeURL(i int) string {
	return "nats-route://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(c.routePorts[i]))
}

func (c *natsCommon) urls() []string {
	out := make([]string, len(c.names))
	for i := range c.names {
		out[i] = c.clientURL(i)
	}
	return out
}

func (c *natsCommon) checkIndex(i int) error {
	if i < 0 || i >= len(c.names) {
		return fmt.Errorf("clustertest: no NATS node %d (the cluster has %d)", i, len(c.names))
	}
	return nil
}

// ConnectOptions are the options of the helper connections: reconnect
// forever and quickly, and fail requests while disconnected instead of
// buffering them.
func ConnectOptions() []nats.Option {
	return []nats.Option{
		nats.Name("clustertest"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50 * time.Millisecond),
		nats.ReconnectJitter(50*time.Millisecond, 50*time.Millisecond),
		nats.ReconnectBufSize(-1),
		nats.Timeout(time.Second),
	}
}

func (c *natsCommon) conn() (*nats.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nc != nil {
		return c.nc, nil
	}
	nc, err := nats.Connect(strings.Join(c.urls(), ","), append(ConnectOptions(), nats.RetryOnFailedConnect(true))...)
	if err != nil {
		return nil, fmt.Errorf("clustertest: connect to the NATS cluster: %w", err)
	}
	c.nc = nc
	return nc, nil
}

func (c *natsCommon) closeConn() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nc != nil {
		c.nc.Close()
		c.nc = nil
	}
}

func (c *natsCommon) jetStream() (jetstream.JetStream, error) {
	nc, err := c.conn()
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("clustertest: %w", err)
	}
	return js, nil
}

func (c *natsCommon) index(server string) (int, error) {
	for i, n := range c.names {
		if n == server {
			return i, nil
		}
	}
	return -1, fmt.Errorf("clustertest: server %q is not in this cluster (%s)", server, strings.Join(c.names, ", "))
}

func (c *natsCommon) leader(ci *jetstream.ClusterInfo, what string) (int, error) {
	if ci == nil || ci.Leader == "" {
		return -1, fmt.Errorf("%w for %s", ErrNoLeader, what)
	}
	return c.index(ci.Leader)
}

// StreamLeader returns the index of the node that leads stream.
func (c *natsCommon) StreamLeader(ctx context.Context, stream string) (int, error) {
	js, err := c.jetStream()
	if err != nil {
		return -1, err
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return -1, fmt.Errorf("clustertest: stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return -1, fmt.Errorf("clustertest: stream %s: %w", stream, err)
	}
	return c.leader(info.Cluster, "stream "+stream)
}

// ConsumerLeader returns the index of the node that leads the consumer.
func (c *natsCommon) ConsumerLeader(ctx context.Context, stream, consumer string) (int, error) {
	js, err := c.jetStream()
	if err != nil {
		return -1, err
	}
	cons, err := js.Consumer(ctx, stream, consumer)
	if err != nil {
		return -1, fmt.Errorf("clustertest: consumer %s of stream %s: %w", consumer, stream, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return -1, fmt.Errorf("clustertest: consumer %s of stream %s: %w", consumer, stream, err)
	}
	return c.leader(info.Cluster, "consumer "+consumer+" of stream "+stream)
}

// waitJetStreamReady waits until every live node answers JetStream API
// requests (so the meta group has a leader they all reach) and a test stream
// replicated on as many nodes as are live (at most 3) gets a leader, current
// replicas and a publish acknowledgement; the stream is deleted again.
func (c *natsCommon) waitJetStreamReady(ctx context.Context, live func() []int) error {
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := "clustertest_ready_" + hex.EncodeToString(b[:])
	check := func(ctx context.Context) error {
		nodes := live()
		if len(nodes) == 0 {
			return errors.New("no node is running")
		}
		for _, i := range nodes {
			if err := c.nodeAnswersJetStream(ctx, i); err != nil {
				return err
			}
		}
		js, err := c.jetStream()
		if err != nil {
			return err
		}
		replicas := min(len(nodes), 3)
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		s, err := js.CreateOrUpdateStream(cctx, jetstream.StreamConfig{
			Name:     name,
			Subjects: []string{name},
			Storage:  jetstream.MemoryStorage,
			Replicas: replicas,
		})
		if err != nil {
			return fmt.Errorf("create an R%d stream: %w", replicas, err)
		}
		defer func() {
			dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = js.DeleteStream(dctx, name)
		}()
		info, err := s.Info(cctx)
		if err != nil {
			return fmt.Errorf("stream info: %w", err)
		}
		if info.Cluster == nil || info.Cluster.Leader == "" {
			return fmt.Errorf("the R%d test stream has no leader yet", replicas)
		}
		current := 0
		for _, p := range info.Cluster.Replicas {
			if p.Current && !p.Offline {
				current++
			}
		}
		if current != replicas-1 {
			return fmt.Errorf("the R%d test stream has %d current followers", replicas, current)
		}
		if _, err := js.Publish(cctx, name, []byte("ready")); err != nil {
			return fmt.Errorf("publish to the R%d test stream: %w", replicas, err)
		}
		return nil
	}
	if err := localproc.WaitFor(ctx, 100*time.Millisecond, nil, check); err != nil {
		return fmt.Errorf("clustertest: JetStream not ready: %w", err)
	}
	return nil
}

// nodeAnswersJetStream asks node i itself (a direct connection) for the
// account's JetStream info, which only the meta leader can give.
func (c *natsCommon) nodeAnswersJetStream(ctx context.Context, i int) error {
	nc, err := nats.Connect(c.clientURL(i), nats.Name("clustertest-probe"), nats.NoReconnect(), nats.Timeout(time.Second))
	if err != nil {
		return fmt.Errorf("node %d: %w", i, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(cctx); err != nil {
		return fmt.Errorf("node %d (%s): JetStream account info: %w", i, c.names[i], err)
	}
	return nil
}

// URLs returns every node's client URL, by node index.
func (c *natsCommon) URLs() []string { return c.urls() }

// URL returns the client URLs comma-separated, as nats.Connect takes them.
func (c *natsCommon) URL() string { return strings.Join(c.urls(), ",") }

// Name returns node i's server name (as JetStream's cluster info names
// leaders and replicas).
func (c *natsCommon) Name(i int) string { return c.names[i] }

// Connect connects to the cluster with ConnectOptions (then opts) and
// closes the connection when tb ends.
func (c *natsCommon) Connect(tb testing.TB, opts ...nats.Option) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(strings.Join(c.urls(), ","), append(ConnectOptions(), opts...)...)
	if err != nil {
		tb.Fatalf("clustertest: connect to the NATS cluster: %v", err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// NATSCluster is a NATS cluster with JetStream of local nats-server
// processes (Debian's nats-server 2.9.10 here), each on free loopback
// client and route ports with its own store directory under the test's temp
// dir, all killed (by PID) when the test ends. Node i's server name is
// "n<i>". Its methods are safe for concurrent use and return errors rather
// than failing the test.
type NATSCluster struct {
	*natsCommon
	nodes []*localproc.Server
}

// StartNATSCluster starts the servers and waits until JetStream is ready
// (see WaitJetStreamReady). It fails tb when it cannot, naming the Debian
// package to install when nats-server is missing.
func StartNATSCluster(tb testing.TB, opt NATSClusterOptions) *NATSCluster {
	tb.Helper()
	opt.defaults()
	bin := mustBinary(tb, "nats-server", "nats-server")
	dir := tb.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), opt.StartTimeout)
	defer cancel()
	began := time.Now()
	common, err := newNATSCommon(opt.Nodes)
	if err != nil {
		tb.Fatal(err)
	}
	c := &NATSCluster{natsCommon: common}
	tb.Cleanup(func() { c.close(tb) })
	for attempt := 0; ; attempt++ {
		err := c.startAll(ctx, bin, dir, opt.ExtraConfig)
		if err == nil {
			break
		}
		c.killAll()
		if !errors.Is(err, localproc.ErrPortTaken) || attempt == 4 {
			tb.Fatalf("clustertest: %v", err)
		}
		if err := c.newPorts(); err != nil {
			tb.Fatal(err)
		}
	}
	if err := c.WaitJetStreamReady(ctx); err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Logf("clustertest: NATS cluster %s of %d nodes up in %v: %s", c.clusterName, opt.Nodes,
		time.Since(began).Round(time.Millisecond), c.URL())
	return c
}

func (c *NATSCluster) startAll(ctx context.Context, bin, dir, extra string) error {
	c.nodes = c.nodes[:0]
	for i, name := range c.names {
		ndir := filepath.Join(dir, name)
		// A fresh start: no JetStream state of an attempt on other ports.
		if err := os.RemoveAll(ndir); err != nil {
			return fmt.Errorf("clustertest: %w", err)
		}
		if err := os.MkdirAll(ndir, 0o755); err != nil {
			return fmt.Errorf("clustertest: %w", err)
		}
		conf := filepath.Join(ndir, "nats.conf")
		if err := os.WriteFile(conf, []byte(c.config(i, ndir, extra)), 0o644); err != nil {
			return fmt.Errorf("clustertest: %w", err)
		}
		p := &localproc.Server{
			Name: fmt.Sprintf("nats %s %s", name, c.clientURL(i)),
			Bin:  bin,
			Args: []string{"-c", conf},
			Dir:  ndir,
			Out:  filepath.Join(ndir, "nats.log"),
		}
		c.nodes = append(c.nodes, p)
		if err := p.Start(); err != nil {
			return wrap(err)
		}
	}
	for i := range c.nodes {
		if err := c.waitUp(ctx, i); err != nil {
			return err
		}
	}
	return nil
}

// config renders node i's configuration file.
func (c *NATSCluster) config(i int, dir, extra string) string {
	var routes []string
	for j := range c.names {
		if j != i {
			routes = append(routes, fmt.Sprintf("    %q", c.routeURL(j)))
		}
	}
	return fmt.Sprintf(`server_name: %q
listen: "127.0.0.1:%d"
jetstream {
  store_dir: %q
  max_memory_store: 268435456
  max_file_store: 2147483648
}
cluster {
  name: %q
  listen: "127.0.0.1:%d"
  routes: [
%s
  ]
}
%s
`, c.names[i], c.clientPorts[i], filepath.Join(dir, "jetstream"), c.clusterName, c.routePorts[i], strings.Join(routes, "\n"), extra)
}

// waitUp waits until node i accepts client connections.
func (c *NATSCluster) waitUp(ctx context.Context, i int) error {
	p := c.nodes[i]
	err := localproc.WaitFor(ctx, 20*time.Millisecond, p.Exited(), func(context.Context) error {
		nc, err := nats.Connect(c.clientURL(i), nats.NoReconnect(), nats.Timeout(500*time.Millisecond))
		if err != nil {
			return err
		}
		nc.Close()
		return nil
	})
	if err == nil {
		return nil
	}
	_ = p.Kill()
	out := p.Tail(30)
	if strings.Contains(strings.ToLower(out), "address already in use") {
		return fmt.Errorf("%w: %s", localproc.ErrPortTaken, p.Name)
	}
	return fmt.Errorf("clustertest: %s did not come up: %w\n%s", p.Name, err, out)
}

func (c *NATSCluster) killAll() {
	for _, p := range c.nodes {
		_ = p.Kill()
	}
}

func (c *NATSCluster) close(tb testing.TB) {
	c.closeConn()
	for _, p := range c.nodes {
		if err := p.Kill(); err != nil {
			tb.Errorf("clustertest: %v", err)
		}
	}
	if tb.Failed() {
		for _, p := range c.nodes {
			tb.Logf("clustertest: log of %s:\n%s", p.Name, p.Tail(30))
		}
	}
}

// PID returns node i's process ID, 0 when it is not running.
func (c *NATSCluster) PID(i int) int {
	if c.checkIndex(i) != nil || !c.nodes[i].Running() {
		return 0
	}
	return c.nodes[i].PID()
}

// Kill sends SIGKILL to node i and waits until it is gone.
func (c *NATSCluster) Kill(i int) error {
	if err := c.checkIndex(i); err != nil {
		return err
	}
	return wrap(c.nodes[i].Kill())
}

// Stop freezes node i with SIGSTOP; Cont resumes it.
func (c *NATSCluster) Stop(i int) error {
	if err := c.checkIndex(i); err != nil {
		return err
	}
	return wrap(c.nodes[i].Signal(syscall.SIGSTOP))
}

// Cont resumes node i after Stop.
func (c *NATSCluster) Cont(i int) error {
	if err := c.checkIndex(i); err != nil {
		return err
	}
	return wrap(c.nodes[i].Signal(syscall.SIGCONT))
}

// Restart starts node i again (killing it first if it runs) with the same
// configuration, ports and store directory, so it rejoins the cluster and
// recovers its streams. It returns once the node accepts connections; call
// WaitJetStreamReady to wait until JetStream has taken it back.
func (c *NATSCluster) Restart(ctx context.Context, i int) error {
	if err := c.checkIndex(i); err != nil {
		return err
	}
	p := c.nodes[i]
	if err := p.Kill(); err != nil {
		return wrap(err)
	}
	for {
		if err := p.Start(); err != nil {
			return wrap(err)
		}
		err := c.waitUp(ctx, i)
		if err == nil || !errors.Is(err, localproc.ErrPortTaken) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("clustertest: restart %s: %w", p.Name, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (c *NATSCluster) live() []int {
	var out []int
	for i, p := range c.nodes {
		if p.Running() && !p.Stopped() {
			out = append(out, i)
		}
	}
	return out
}

// WaitJetStreamReady waits until every running, unfrozen node answers
// JetStream API requests (the meta group has a leader) and a test stream
// replicated on as many of them as possible (at most 3) has a leader and
// current followers and acknowledges a publish.
func (c *NATSCluster) WaitJetStreamReady(ctx context.Context) error {
	return c.waitJetStreamReady(ctx, c.live)
}
