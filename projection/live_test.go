package projection_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/natsevent"
	"github.com/eskit/eskit/projection"
)

// consumerState returns the live consumer's delivered and acknowledged
// stream sequences.
func consumerState(t testing.TB, b *broker, name string) (delivered, ackFloor uint64) {
	t.Helper()
	c, err := b.js.Consumer(context.Background(), b.stream, projection.ConsumerName(projection.DefaultConsumerPrefix, name))
	require.NoError(t, err)
	info, err := c.Info(context.Background())
	require.NoError(t, err)
	return info.Delivered.Stream, info.AckFloor.Stream
}

func streamLastSeq(t testing.TB, b *broker) uint64 {
	t.Helper()
	s, err := b.js.Stream(context.Background(), b.stream)
	require.NoError(t, err)
	info, err := s.Info(context.Background())
	require.NoError(t, err)
	return info.State.LastSeq
}

// Live events come from the durable consumer; messages delivered again are
// skipped, never applied twice.
func TestLiveFromJetStreamRedeliveryNotApplied(t *testing.T) {
	rdb, prefix := testsvc.Redis(t)
	store := newMemstore()
	b := newBroker(t)
	acc := newAccounts(t, "accounts")
	ctx := context.Background()
	appendEvents(t, store, acc.reg, streamNames(4), 200) // history: from the store

	opts := fastOpts(t, prefix, projection.WithJetStream(b.js, b.stream), projection.WithBatchSize(100))
	r, err := projection.NewRunner(rdb, store, []projection.Projection{acc}, opts...)
	require.NoError(t, err)
	rn := start(t, r)
	waitHead(t, r, "accounts", store)
	require.Zero(t, streamLastSeq(t, b), "nothing published yet: history came from the store")

	// Live: new events reach the runner only through JetStream.
	before := len(acc.applies())
	appendEvents(t, store, acc.reg, streamNames(4), 300)
	recs := allRecords(t, store)
	b.publish(t, recs[200:])
	waitHead(t, r, "accounts", store)
	require.Len(t, acc.applies(), before+300)
	ns, err := r.Namespace(ctx, "accounts")
	require.NoError(t, err)
	require.Equal(t, expected(recs), dump(t, rdb, ns))
	eventually(t, 10*time.Second, "batch acknowledged", func() bool {
		_, ack := consumerState(t, b, "accounts")
		return ack == streamLastSeq(t, b)
	})

	// Deliver everything again: the acknowledgements are lost (the
	// consumer is recreated from the start of the stream).
	rn.stop()
	name := projection.ConsumerName(projection.DefaultConsumerPrefix, "accounts")
	require.NoError(t, b.js.DeleteConsumer(ctx, b.stream, name))
	_, err = b.js.CreateConsumer(ctx, b.stream, jetstream.ConsumerConfig{
		Durable: name, DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckAllPolicy,
	})
	require.NoError(t, err)
	acc2 := newAccounts(t, "accounts")
	r2, err := projection.NewRunner(rdb, store, []projection.Projection{acc2}, opts...)
	require.NoError(t, err)
	start(t, r2)
	eventually(t, 10*time.Second, "redelivered batch acknowledged", func() bool {
		delivered, ack := consumerState(t, b, "accounts")
		return delivered == streamLastSeq(t, b) && ack == delivered
	})
	require.Empty(t, acc2.applies(), "redelivered records are skipped")
	require.Equal(t, expected(recs), dump(t, rdb, ns))

	// And the runner goes on with new events.
	appendEvents(t, store, acc.reg, streamNames(4), 10)
	recs = allRecords(t, store)
	b.publish(t, recs[500:])
	waitHead(t, r2, "accounts", store)
	require.Len(t, acc2.applies(), 10)
	require.Equal(t, expected(recs), dump(t, rdb, ns))
}

// Records the stream lacks (never published, or not decodable) are taken
// from the store's feed before later records are applied.
func TestLiveFillsGapsFromStore(t *testing.T) {
	rdb, prefix := testsvc.Redis(t)
	store := newMemstore()
	b := newBroker(t)
	acc := newAccounts(t, "accounts")
	ctx := context.Background()

	r, err := projection.NewRunner(rdb, store, []projection.Projection{acc},
		fastOpts(t, prefix, projection.WithJetStream(b.js, b.stream))...)
	require.NoError(t, err)
	start(t, r)
	waitHead(t, r, "accounts", store) // the (empty) first build is done
	ns, err := r.Namespace(ctx, "accounts")
	require.NoError(t, err)

	// The first five are not published.
	appendEvents(t, store, acc.reg, streamNames(2), 10)
	recs := allRecords(t, store)
	b.publish(t, recs[5:])
	waitHead(t, r, "accounts", store)
	require.Equal(t, expected(recs), dump(t, rdb, ns))

	// An undecodable message in place of two records.
	appendEvents(t, store, acc.reg, streamNames(2), 3)
	recs = allRecords(t, store)
	_, err = b.js.PublishMsg(ctx, &nats.Msg{Subject: natsevent.Subject(b.prefix, "acct-0", "Deposited"), Data: []byte("junk")})
	require.NoError(t, err)
	b.publish(t, recs[12:])
	waitHead(t, r, "accounts", store)
	require.Equal(t, expected(recs), dump(t, rdb, ns))
	st, err := r.Status(ctx, "accounts")
	require.NoError(t, err)
	require.Equal(t, 0, st.Parked)
}

// A relay-fed live runner goes on from JetStream after a rebuild.
func TestLiveRebuild(t *testing.T) {
	rdb, prefix := testsvc.Redis(t)
	store := newMemstore()
	b := newBroker(t)
	b.relay(t, store)
	acc := newAccounts(t, "accounts")
	ctx := context.Background()
	appendEvents(t, store, acc.reg, streamNames(3), 500)

	r, err := projection.NewRunner(rdb, store, []projection.Projection{acc},
		fastOpts(t, prefix, projection.WithJetStream(b.js, b.stream), projection.WithBatchSize(100))...)
	require.NoError(t, err)
	start(t, r)
	waitHead(t, r, "accounts", store)
	appendEvents(t, store, acc.reg, streamNames(3), 100)
	require.NoError(t, r.Rebuild(ctx, "accounts"))
	appendEvents(t, store, acc.reg, streamNames(3), 100)
	waitHead(t, r, "accounts", store)
	ns, err := r.Namespace(ctx, "accounts")
	require.NoError(t, err)
	require.Equal(t, int64(2), ns.Version)
	require.Equal(t, expected(allRecords(t, store)), dump(t, rdb, ns))
}
