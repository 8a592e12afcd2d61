package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/outbox"
	"github.com/eskit/eskit/projection"
)

// appendEvery is each append worker's pace.
const appendEvery = 4 * time.Millisecond

// await waits for ch to close.
func await(tb testing.TB, ch <-chan struct{}, what string) {
	tb.Helper()
	select {
	case <-ch:
	case <-time.After(waitLimit):
		tb.Fatalf("timed out waiting: %s", what)
	}
}

// The relay leading the feed is killed while it publishes (its context
// ends), and a standby takes over; then the new leader's lease expires in
// PostgreSQL behind its back (as after a freeze), and leadership moves on
// under a newer fencing token. Nothing is lost or published twice.
func TestRelayKilledAndReplaced(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	a := e.startAppenders(4, appendEvery)
	relays := []*relayProc{e.startRelay(), e.startRelay()}
	run := e.startRunner(newLedger())
	a.waitMore(200)
	e.waitProgress()

	leader := func(rs ...*relayProc) *relayProc {
		var found *relayProc
		require.Eventually(t, func() bool {
			n := 0
			for _, r := range rs {
				if r.relay.Stats().Leader {
					found, n = r, n+1
				}
			}
			return n == 1
		}, waitLimit, time.Millisecond, "one relay leads")
		return found
	}
	first := leader(relays...)
	first.stop()
	second := relays[0]
	if second == first {
		second = relays[1]
	}
	require.Eventually(t, func() bool {
		st := second.relay.Stats()
		return st.Leader && st.Published > 0
	}, waitLimit, time.Millisecond, "the standby takes over and publishes")
	a.waitMore(200)
	e.waitProgress()

	third := e.startRelay()
	before := second.relay.Stats().Published
	require.Eventually(t, func() bool { return second.relay.Stats().Published > before }, waitLimit, time.Millisecond)
	token := second.relay.Stats().Lease.Token
	tag, err := e.pool.Exec(context.Background(), `UPDATE `+pgx.Identifier{schema, "leases"}.Sanitize()+`
		SET expires_at = clock_timestamp() WHERE name = $1 AND expires_at > clock_timestamp()`,
		outbox.LeaseName(outbox.DefaultName))
	require.NoError(t, err)
	require.EqualValues(t, 1, tag.RowsAffected(), "the leader's lease expires")
	a.waitMore(200)
	e.waitProgress()
	require.Eventually(t, func() bool {
		l := leader(second, third)
		st := l.relay.Stats()
		return st.Lease.Token > token && st.Published > 0
	}, waitLimit, time.Millisecond, "a relay leads under a newer token")

	a.stop()
	e.verify(run, a)
}

// The JetStream server stops and restarts twice while appends go on and
// the relay and the runner keep running.
func TestJetStreamRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true)
	a := e.startAppenders(4, appendEvery)
	e.startRelay()
	run := e.startRunner(newLedger())
	a.waitMore(200)
	e.waitProgress()
	for range 2 {
		e.nats.Stop()
		a.waitMore(300) // the store takes appends while the broker is down
		require.NoError(t, e.nats.Restart())
		a.waitMore(200)
		e.waitProgress()
	}
	a.stop()
	e.verify(run, a)
}

// Messages are delivered again: first every message of the stream (the
// durable consumer is deleted and recreated from the start, as when
// acknowledgements are lost), then the messages of a
// batch its runner died in, once their ack wait has passed. Redelivered
// records are never applied twice.
func TestRedelivery(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, false)
	a := e.startAppenders(4, appendEvery)
	e.startRelay()
	l := newLedger()
	const ackWait = 300 * time.Millisecond
	run := e.startRunner(l, projection.WithAckWait(ackWait))
	a.waitMore(200)
	e.waitProgress()

	consumerInfo := func() *jetstream.ConsumerInfo {
		c, err := e.js.Consumer(ctx, e.stream, projection.ConsumerName(projection.DefaultConsumerPrefix, ledgerPN))
		if err != nil {
			return nil
		}
		info, err := c.Info(ctx)
		if err != nil {
			return nil
		}
		return info
	}
	// The durable consumer is recreated to deliver the whole stream again
	// while the runner is stopped. (Recreated under a running runner, an
	// acknowledgement the runner sent to the old consumer can reach the new
	// one and raise its ack floor past what it has delivered; the new
	// consumer then ignores acknowledgements until its delivery count
	// catches up, which is slow but loses nothing.)
	run.stop(t)
	name := projection.ConsumerName(projection.DefaultConsumerPrefix, ledgerPN)
	err := e.js.DeleteConsumer(ctx, e.stream, name)
	require.NoError(t, err)
	_, err = e.js.CreateConsumer(ctx, e.stream, jetstream.ConsumerConfig{
		Durable:       name,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       ackWait,
		MaxAckPending: 10000,
	})
	require.NoError(t, err, "consumer recreated from the start of the stream")
	run = e.startRunner(l, projection.WithAckWait(ackWait))
	s, err := e.js.Stream(ctx, e.stream)
	require.NoError(t, err)
	sinfo, err := s.Info(ctx)
	require.NoError(t, err)
	history := sinfo.State.LastSeq
	require.Positive(t, history)
	require.Eventually(t, func() bool {
		info := consumerInfo()
		return info != nil && info.AckFloor.Stream > history
	}, waitLimit, 2*time.Millisecond, "the whole stream is delivered again and acknowledged")
	e.waitProgress()

	// A runner that dies in the middle of a batch never acknowledges it:
	// hold a batch, cut the runner off from Redis so the batch cannot
	// commit, and stop it. Its successor, on the same durable consumer, gets
	// the unacknowledged messages again once their ack wait has passed
	// (redeliveries take consumer sequence numbers of their own) and must
	// not apply them twice.
	g := l.holdNext(t)
	await(t, g.entered, "a batch in progress")
	run.redis.freeze()
	run.proc.cancel()
	g.open()
	<-run.proc.done
	run.redis.thaw()
	run = e.startRunner(l, projection.WithAckWait(ackWait))
	require.Eventually(t, func() bool {
		info := consumerInfo()
		return info != nil && info.Delivered.Consumer > info.Delivered.Stream
	}, waitLimit, 5*time.Millisecond, "messages are redelivered")
	a.waitMore(200)
	e.waitProgress()

	a.stop()
	e.verify(run, a)
}

// The active runner freezes in the middle of a batch (its Redis commands,
// lease renewals included, stall); its lease expires and a second runner
// takes over. When the first one thaws, its batch must not commit. Then the second runner is stopped in
// the middle of a batch and the first takes over again.
func TestRunnerKilledMidBatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	a := e.startAppenders(4, appendEvery)
	e.startRelay()
	la, lb := newLedger(), newLedger()
	ra := e.startRunner(la, projection.WithOwner("a"))
	require.Eventually(t, func() bool { return ra.runner.Active(ledgerPN) }, waitLimit, time.Millisecond)
	rb := e.startRunner(lb, projection.WithOwner("b"))
	a.waitMore(200)
	e.waitProgress()
	require.False(t, rb.runner.Active(ledgerPN), "one runner at a time")

	g := la.holdNext(t)
	await(t, g.entered, "runner a in the middle of a batch")
	ra.redis.freeze()
	require.Eventually(t, func() bool { return rb.runner.Active(ledgerPN) }, waitLimit, time.Millisecond,
		"runner b takes over once a's lease expired")
	e.waitProgress()
	g.open() // a's batch goes on to its commit, which must be refused
	ra.redis.thaw()
	require.Eventually(t, func() bool { return !ra.runner.Active(ledgerPN) }, waitLimit, time.Millisecond,
		"runner a steps down")
	a.waitMore(200)
	e.waitProgress()
	require.True(t, rb.runner.Active(ledgerPN))

	g = lb.holdNext(t)
	await(t, g.entered, "runner b in the middle of a batch")
	rb.cancel()
	g.open()
	await(t, rb.done, "runner b stopped")
	require.Eventually(t, func() bool { return ra.runner.Active(ledgerPN) }, waitLimit, time.Millisecond,
		"runner a takes over")
	a.waitMore(200)
	e.waitProgress()

	a.stop()
	e.verify(ra, a)
}

// flushLua deletes every key under a prefix in one atomic step, as a Redis
// that lost its data.
const flushLua = `
local n = 0
for _, k in ipairs(redis.call('KEYS', ARGV[1])) do
  redis.call('DEL', k)
  n = n + 1
end
return n`

// Redis loses every key of the deployment (read model, checkpoint, lease,
// pointer) while appends go on: the runner rebuilds the read model from
// the store's feed, and a blue/green rebuild gives the same model.
func TestRedisFlushedThenRebuilt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, false)
	a := e.startAppenders(4, appendEvery)
	e.startRelay()
	run := e.startRunner(newLedger())
	a.waitMore(200)
	e.waitProgress()

	n, err := e.rdb.Eval(ctx, flushLua, nil, e.prefix+"*").Int()
	require.NoError(t, err)
	require.Positive(t, n)
	a.waitMore(200)
	e.waitProgress()
	require.Eventually(t, func() bool { return run.runner.Active(ledgerPN) }, waitLimit, time.Millisecond)
	rctx, cancel := context.WithTimeout(ctx, waitLimit)
	defer cancel()
	require.NoError(t, run.runner.Rebuild(rctx, ledgerPN), "rebuild while appends go on")
	a.waitMore(200)
	e.waitProgress()

	a.stop()
	e.verify(run, a)
}

// One record's apply keeps failing: it is parked, later records of its
// stream are parked behind it, and the other streams go on. Retrying while
// the cause persists changes nothing; once it is fixed, RetryParked
// applies the stream's records in order and the model equals the fold.
func TestPoisonEventParked(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, false)
	a := e.startAppenders(4, appendEvery)
	e.startRelay()
	l := newLedger()
	run := e.startRunner(l)
	a.waitMore(200)
	e.waitProgress()

	const frozen = "acct-frozen"
	appendOne := func(version int64, ev eventstore.Event) {
		t.Helper()
		res, err := e.store.Append(ctx, frozen, eventstore.Exact(version), ev)
		require.NoError(t, err)
		a.add(res.Position, ev)
	}
	appendOne(0, newEvent(100))
	poison := newEvent(-30)
	l.setPoison(poison.ID, true)
	appendOne(1, poison)
	const behind = 10
	for v := range int64(behind) {
		appendOne(2+v, newEvent(v+1))
	}
	a.waitMore(200) // the other streams go on
	a.stop()
	head := e.settle(a)

	parked, err := e.reader().Parked(ctx, ledgerPN)
	require.NoError(t, err)
	require.Len(t, parked, 1+behind)
	require.Equal(t, poison.ID, parked[0].Record.ID)
	require.Equal(t, uuid.UUID{}, parked[0].BlockedBy)
	require.Equal(t, 3, parked[0].Attempts)
	require.Contains(t, parked[0].Error, "account frozen")
	for i, p := range parked[1:] {
		require.Equal(t, frozen, p.Record.StreamID)
		require.Equal(t, int64(3+i), p.Record.Version, "parked in stream order")
		require.Equal(t, poison.ID, p.BlockedBy)
	}
	beforeFix := func(r eventstore.Record) bool { return r.StreamID == frozen && r.Version >= 2 }
	got, ns := e.activeModel()
	require.Equal(t, fold(e.feed(head), beforeFix), got, "model of %s: the frozen stream stops before its poison record", ns)

	res, err := run.runner.RetryParked(ctx, ledgerPN)
	require.NoError(t, err)
	require.Equal(t, projection.RetryResult{Applied: 0, Remaining: 1 + behind}, res)
	parked, err = e.reader().Parked(ctx, ledgerPN)
	require.NoError(t, err)
	require.Len(t, parked, 1+behind)
	require.True(t, strings.Contains(parked[0].Error, "account frozen"))

	l.setPoison(poison.ID, false)
	res, err = run.runner.RetryParked(ctx, ledgerPN)
	require.NoError(t, err)
	require.Equal(t, projection.RetryResult{Applied: 1 + behind, Remaining: 0}, res)
	appendOne(2+behind, newEvent(7)) // the stream flows again
	e.verify(run, a)
}
