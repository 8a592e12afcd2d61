package projection_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/internal/infra/clustertest"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/outbox"
	"github.com/eskit/eskit/projection"
)

// The live side on a real 3-node NATS cluster (Debian's nats-server) with
// a 3-replica stream: the stream leader, a consumer's leader and the node
// the runner is connected to are killed (kill -9) in turn while events are
// appended; every event reaches the read model exactly once.
func TestClusterNATSNodesKilledMidLoad(t *testing.T) {
	c := clustertest.StartNATSCluster(t, clustertest.NATSClusterOptions{})
	testNATSClusterFaults(t, c, c.Kill)
}

// The same on a cluster of in-process servers (the current nats-server,
// whose consumers filter the partitions' buckets on the server), shut down
// in turn instead of killed.
func TestClusterNATSEmbeddedNodesDownMidLoad(t *testing.T) {
	c := clustertest.StartEmbeddedNATSCluster(t, clustertest.NATSClusterOptions{})
	testNATSClusterFaults(t, c, c.Shutdown)
}

// natsCluster is what both cluster flavours offer.
type natsCluster interface {
	Name(i int) string
	Connect(tb testing.TB, opts ...nats.Option) *nats.Conn
	Restart(ctx context.Context, i int) error
	WaitJetStreamReady(ctx context.Context) error
	StreamLeader(ctx context.Context, stream string) (int, error)
	ConsumerLeader(ctx context.Context, stream, consumer string) (int, error)
}

func testNATSClusterFaults(t *testing.T, c natsCluster, down func(i int) error) {
	ctx := context.Background()
	rdb, prefix := testsvc.Redis(t)
	pool := testsvc.Pool(t)
	require.NoError(t, pgstore.Migrate(ctx, pool, pgSchema))
	store, err := pgstore.New(ctx, pool, pgstore.WithSchema(pgSchema))
	require.NoError(t, err)
	t.Cleanup(store.Close)

	connect := func() jetstream.JetStream {
		nc := c.Connect(t, append(outbox.ConnectOptions(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))...)
		js, err := jetstream.New(nc)
		require.NoError(t, err)
		return js
	}
	relayJS, runnerJS := connect(), connect()
	const subjects = "evc"
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	defer scancel()
	_, err = outbox.EnsureStream(sctx, relayJS, outbox.StreamConfig{Prefix: subjects, Name: "EVC", Replicas: 3})
	require.NoError(t, err)

	relay, err := outbox.NewRelay(store, pool, relayJS, outbox.WithSchema(pgSchema), outbox.WithPrefix(subjects),
		outbox.WithBackoffPolicy(backoff.Policy{Initial: 10 * time.Millisecond, Max: 200 * time.Millisecond}), outbox.WithAckTimeout(2*time.Second))
	require.NoError(t, err)
	rctx, rcancel := context.WithCancel(ctx)
	relayDone := make(chan struct{})
	go func() { defer close(relayDone); _ = relay.Run(rctx) }()
	t.Cleanup(func() { rcancel(); <-relayDone })

	acc := newAccounts(t, "accounts")
	acc.partitions = 3
	r, err := projection.NewRunner(rdb, store, []projection.Projection{acc},
		fastOpts(t, prefix, projection.WithJetStream(runnerJS, "EVC"), projection.WithHeartbeat(time.Second),
			projection.WithLease(5*time.Second, 500*time.Millisecond))...)
	require.NoError(t, err)
	start(t, r)
	waitHead(t, r, "accounts", store)

	stopAppending := appendWhileRunning(t, store, acc.reg, 3, 2*time.Millisecond)
	progress := func(what string, kill func() int) {
		t.Helper()
		time.Sleep(time.Second)
		before, err := r.Reader().Checkpoint(ctx, "accounts")
		require.NoError(t, err)
		i := kill()
		killed := time.Now()
		require.NoError(t, down(i))
		eventually(t, 60*time.Second, "the projection advances after the "+what+" was killed", func() bool {
			ckpt, err := r.Reader().Checkpoint(ctx, "accounts")
			return err == nil && ckpt.After(before)
		})
		t.Logf("%s (node %d) killed: every partition advanced again after %v", what, i, time.Since(killed).Round(time.Millisecond))
		rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		require.NoError(t, c.Restart(rctx, i))
		require.NoError(t, c.WaitJetStreamReady(rctx))
	}
	progress("stream leader", func() int {
		i := -1
		eventually(t, 30*time.Second, "the stream has a leader", func() bool {
			var err error
			i, err = c.StreamLeader(ctx, "EVC")
			return err == nil
		})
		return i
	})
	progress("consumer leader", func() int {
		i := -1
		eventually(t, 30*time.Second, "partition 0's consumer has a leader", func() bool {
			var err error
			i, err = c.ConsumerLeader(ctx, "EVC", fmt.Sprintf("%s_p0of3", projection.ConsumerName(projection.DefaultConsumerPrefix, "accounts")))
			return err == nil
		})
		return i
	})
	progress("runner's node", func() int {
		name := runnerJS.Conn().ConnectedServerName()
		for i := range 3 {
			if c.Name(i) == name {
				return i
			}
		}
		t.Fatalf("connected to unknown server %q", name)
		return -1
	})
	stopAppending()

	head := testsvc.SettledHead(t, store)
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	require.NoError(t, r.WaitFor(wctx, "accounts", head))
	ns, err := r.Namespace(ctx, "accounts")
	require.NoError(t, err)
	recs := allRecords(t, store)
	require.Equal(t, expected(recs), modelOf(t, rdb, ns), "the read model is the fold of the store")
	counts := map[eventstore.Position]int{}
	for _, a := range acc.applies() {
		counts[a.position]++
	}
	effects := effectsAfter(t, acc, recs)
	for _, rec := range recs {
		require.Equal(t, 1, counts[rec.Position], "applies of %s v%d", rec.StreamID, rec.Version)
		require.Equal(t, 1, effects[rec.ID], "side effects of %s v%d", rec.StreamID, rec.Version)
	}
}
