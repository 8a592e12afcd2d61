package clustertest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/eskit/eskit/internal/infra/clustertest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// natsCluster is what the two cluster flavours have in common.
type natsCluster interface {
	URLs() []string
	URL() string
	Connect(tb testing.TB, opts ...nats.Option) *nats.Conn
	Restart(ctx context.Context, i int) error
	WaitJetStreamReady(ctx context.Context) error
	StreamLeader(ctx context.Context, stream string) (int, error)
	ConsumerLeader(ctx context.Context, stream, consumer string) (int, error)
}

func TestClusterNATS(t *testing.T) {
	t.Parallel()
	c := clustertest.StartNATSCluster(t, clustertest.NATSClusterOptions{})
	require.Len(t, c.URLs(), 3)
	for i := range 3 {
		require.NotZero(t, c.PID(i))
	}
	testNATSFailover(t, c, func(i int) error { return c.Kill(i) })

	// A frozen node: the others keep the stream going; thawed, it catches up.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, c.Stop(1))
	require.NoError(t, c.Cont(1))
	require.NoError(t, c.WaitJetStreamReady(ctx))
}

func TestClusterNATSEmbedded(t *testing.T) {
	t.Parallel()
	c := clustertest.StartEmbeddedNATSCluster(t, clustertest.NATSClusterOptions{})
	require.Len(t, c.URLs(), 3)
	require.NotNil(t, c.Server(0))
	testNATSFailover(t, c, func(i int) error { return c.Shutdown(i) })
}

// testNATSFailover publishes to an R3 stream, takes its leader down, checks
// that publishes keep being acknowledged (a new leader is elected), restarts
// the node and checks that it catches up.
func testNATSFailover(t *testing.T, c natsCluster, down func(i int) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js, err := jetstream.New(c.Connect(t))
	require.NoError(t, err)
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "orders", Subjects: []string{"orders.>"}, Replicas: 3, Storage: jetstream.FileStorage,
	})
	require.NoError(t, err)
	_, err = s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "proj", AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(t, err)
	for i := range 10 {
		_, err := js.Publish(ctx, "orders.new", []byte(fmt.Sprint(i)))
		require.NoError(t, err)
	}
	leader, err := c.StreamLeader(ctx, "orders")
	require.NoError(t, err)
	cleader, err := c.ConsumerLeader(ctx, "orders", "proj")
	require.NoError(t, err)
	t.Logf("stream leader n%d, consumer leader n%d", leader, cleader)

	downAt := time.Now()
	require.NoError(t, down(leader))
	published := 10
	for i := 0; published < 20; i++ {
		require.Less(t, time.Since(downAt), 30*time.Second, "publishes still fail after the leader went down")
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		_, err := js.Publish(pctx, "orders.new", []byte(fmt.Sprint(published)), jetstream.WithMsgID(fmt.Sprint(published)))
		pcancel()
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if published == 10 {
			t.Logf("first publish acknowledged %v after the leader went down", time.Since(downAt).Round(time.Millisecond))
		}
		published++
	}
	newLeader, err := c.StreamLeader(ctx, "orders")
	require.NoError(t, err)
	require.NotEqual(t, leader, newLeader)

	require.NoError(t, c.Restart(ctx, leader))
	require.NoError(t, c.WaitJetStreamReady(ctx))
	require.Eventually(t, func() bool {
		info, err := s.Info(ctx)
		if err != nil || info.Cluster == nil || info.State.Msgs != 20 {
			return false
		}
		current := 0
		for _, p := range info.Cluster.Replicas {
			if p.Current {
				current++
			}
		}
		return current == 2
	}, 30*time.Second, 100*time.Millisecond, "the restarted node catches up")
	t.Logf("restarted node n%d back in the stream %v after it went down", leader, time.Since(downAt).Round(time.Millisecond))
}
