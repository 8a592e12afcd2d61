package projection_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/lease/redislease"
	"github.com/eskit/eskit/projection"
)

func TestNamespaceKeys(t *testing.T) {
	ns := projection.Namespace{Prefix: "app:", Projection: "accounts", Version: 3, Partitions: 1}
	require.Equal(t, "app:{accounts:0}:v3", ns.String())
	require.Equal(t, "app:{accounts:0}:v3:m:balance:acct-1", ns.Key("balance", "acct-1"))
	require.Equal(t, ns, ns.ForStream("acct-1"))

	// A partitioned namespace: a stream's keys live in its partition, and
	// all partitions can be listed.
	pns := projection.Namespace{Prefix: "app:", Projection: "accounts", Version: 3, Partitions: 4}
	p := eventstore.StreamPartition("acct-1", 4)
	require.Equal(t, fmt.Sprintf("app:{accounts:%d}:v3:m:balance", p), pns.ForStream("acct-1").Key("balance"))
	require.Len(t, pns.All(), 4)
	require.Equal(t, "app:{accounts:2}:v3", pns.All()[2].String())
	require.Equal(t, `a\*b\?\[c\]\\`, projection.GlobEscape(`a*b?[c]\`))
	require.Equal(t, "p_accounts", projection.ConsumerName("p", "accounts"))
	require.NotEqual(t, projection.ConsumerName("p", "a.b"), projection.ConsumerName("p", "a*b"))
}

// The read model and the checkpoint advance together: after catching up,
// the model is exactly the fold of the feed and the checkpoint is the head.
func TestApplyAndCheckpoint(t *testing.T) {
	rdb, prefix := testsvc.Redis(t)
	store := newMemstore()
	acc := newAccounts(t, "accounts")
	appendEvents(t, store, acc.reg, streamNames(5), 2500)

	r, err := projection.NewRunner(rdb, store, []projection.Projection{acc}, fastOpts(t, prefix, projection.WithBatchSize(400))...)
	require.NoError(t, err)
	start(t, r)
	head := waitHead(t, r, "accounts", store)

	ctx := context.Background()
	ns, err := r.Namespace(ctx, "accounts")
	require.NoError(t, err)
	require.Equal(t, int64(1), ns.Version)
	require.Equal(t, expected(allRecords(t, store)), dump(t, rdb, ns))
	ckpt, err := r.Reader().Checkpoint(ctx, "accounts")
	require.NoError(t, err)
	require.Equal(t, head, ckpt)

	st, err := r.Status(ctx, "accounts")
	require.NoError(t, err)
	require.True(t, st.Active)
	require.Equal(t, head, st.Checkpoint)
	require.Equal(t, int64(0), st.LagEvents)
	require.Equal(t, 0, st.Parked)
	require.Equal(t, r.Owner(), st.Owner)
	require.False(t, st.LastRecordedAt.IsZero())

	// The first build is a replay: no side effects fired.
	require.Empty(t, acc.sideEffects())
	for _, a := range acc.applies() {
		require.True(t, a.replay)
	}
	// New events after the build are live: side effects fire once each.
	rec := appendOne(t, store, acc.reg, "acct-0", Deposited{Amount: 5})
	waitHead(t, r, "accounts", store)
	require.Equal(t, map[uuid.UUID]int{rec.ID: 1}, acc.sideEffects())
	require.Equal(t, expected(allRecords(t, store)), dump(t, rdb, ns))
}

// A runner killed between applying a batch and its EXEC leaves neither the
// batch's writes nor its checkpoint; restarted, it ends with the same model
// as a fresh build.
func TestKilledMidBatchThenRestarted(t *testing.T) {
	rdb, prefix := testsvc.Redis(t)
	store := newMemstore()
	acc := newAccounts(t, "accounts")
	// The read model exists (its first build over the empty store is done).
	r0, err := projection.NewRunner(rdb, store, []projection.Projection{acc}, fastOpts(t, prefix)...)
	require.NoError(t, err)
	rn0 := start(t, r0)
	waitHead(t, r0, "accounts", store)
	rn0.stop()
	appendEvents(t, store, acc.reg, streamNames(4), 3000)
	recs := allRecords(t, store)

	var commits atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hook := func(context.Context, string) {
		if commits.Add(1) == 3 {
			cancel() // the process dies after applying its third batch
		}
	}
	r1, err := projection.NewRunner(rdb, store, []projection.Projection{acc},
		fastOpts(t, prefix, projection.WithBatchSize(500), projection.WithBeforeCommit(hook), projection.WithKeepLease())...)
	require.NoError(t, err)
	require.NoError(t, r1.Run(ctx))

	reader := projection.NewReader(rdb, prefix, store)
	ckpt, err := reader.Checkpoint(context.Background(), "accounts")
	require.NoError(t, err)
	require.Equal(t, recs[999].Position, ckpt, "two batches committed")
	ns, err := reader.Namespace(context.Background(), "accounts")
	require.NoError(t, err)
	require.Equal(t, expected(recs[:1000]), dump(t, rdb, ns), "the third batch left nothing")

	// Restart (the lease of the dead runner expires first).
	r2, err := projection.NewRunner(rdb, store, []projection.Projection{newAccounts(t, "accounts")}, fastOpts(t, prefix)...)
	require.NoError(t, err)
	start(t, r2)
	waitHead(t, r2, "accounts", store)

	fresh := freshBuild(t, store, prefix+"fresh:")
	require.Equal(t, fresh, dump(t, rdb, ns))
	require.Equal(t, expected(recs), fresh)
}

// freshBuild builds the accounts projection from scratch under prefix and
// returns its model.
func freshBuild(t *testing.T, store eventstore.Store, prefix string) map[string]string {
	t.Helper()
	rdb, _ := testsvc.Redis(t)
	t.Cleanup(func() { _ = testsvc.DeletePrefix(context.Background(), rdb, prefix) })
	r, err := projection.NewRunner(rdb, store, []projection.Projection{newAccounts(t, "accounts")}, fastOpts(t, prefix)...)
	require.NoError(t, err)
	rn := start(t, r)
	waitHead(t, r, "accounts", store)
	rn.stop()
	ns, err := projection.NewReader(rdb, prefix, nil).Namespace(context.Background(), "accounts")
	require.NoError(t, err)
	return dump(t, rdb, ns)
}

// With Redis flushed, a new runner rebuilds the same model from the store.
func TestRebuildAfterRedisFlush(t *testing.T) {
	rdb, prefix := testsvc.Redis(t)
	store := newMemstore()
	acc := newAccounts(t, "accounts")
	appendEvents(t, store, acc.reg, streamNames(6), 1500)

	r1, err := projection.NewRunner(rdb, store, []projection.Projection{acc}, fastOpts(t, prefix)...)
	require.NoError(t, err)
	rn := start(t, r1)
	waitHead(t, r1, "accounts", store)
	ns, err := r1.Namespace(context.Background(), "accounts")
	require.NoError(t, err)
	before := dump(t, rdb, ns)
	rn.stop()

	require.NoError(t, testsvc.DeletePrefix(context.Background(), rdb, prefix))
	require.Empty(t, dump(t, rdb, ns))

	r2, err := projection.NewRunner(rdb, store, []projection.Projection{newAccounts(t, "accounts")}, fastOpts(t, prefix)...)
	require.NoError(t, err)
	start(t, r2)
	waitHead(t, r2, "accounts", store)
	require.Equal(t, before, dump(t, rdb, ns))
}

// A record that keeps failing is parked, later records of its stream are
// parked behind it, other streams go on; retry and skip unblock the stream.
func TestPoisonRecordsParked(t *testing.T) {
	rdb, prefix := testsvc.Redis(t)
	store := newMemstore()
	acc := newAccounts(t, "accounts")
	ctx := context.Background()

	r, err := projection.NewRunner(rdb, store, []projection.Projection{acc}, fastOpts(t, prefix)...)
	require.NoError(t, err)
	start(t, r)
	waitHead(t, r, "accounts", store) // the (empty) first build is done
	ns, err := r.Namespace(ctx, "accounts")
	require.NoError(t, err)
	history := func(stream string) []string {
		l, err := rdb.LRange(ctx, ns.Key("history", stream), 0, -1).Result()
		require.NoError(t, err)
		return l
	}

	a1 := appendOne(t, store, acc.reg, "acct-a", Deposited{Amount: 1})
	poison := appendOne(t, store, acc.reg, "acct-a", Deposited{Amount: 2}) // not failing yet: the runner may apply it
	waitHead(t, r, "accounts", store)
	_ = a1
	_ = poison

	// Make acct-a's next record fail.
	bad := newEvent(t, acc.reg, Deposited{Amount: 3})
	acc.setFail(bad.ID, errors.New("boom"))
	_, err = store.Append(ctx, "acct-a", eventstore.Any, bad)
	require.NoError(t, err)
	behind1 := appendOne(t, store, acc.reg, "acct-a", Withdrawn{Amount: 1})
	other := appendOne(t, store, acc.reg, "acct-b", Deposited{Amount: 7})
	behind2 := appendOne(t, store, acc.reg, "acct-a", Deposited{Amount: 4})
	waitHead(t, r, "accounts", store)

	parked, err := r.Parked(ctx, "accounts")
	require.NoError(t, err)
	require.Len(t, parked, 3)
	require.Equal(t, bad.ID, parked[0].Record.ID)
	require.Equal(t, "boom", parked[0].Error)
	require.Equal(t, 3, parked[0].Attempts)
	require.Equal(t, behind1.ID, parked[1].Record.ID)
	require.Equal(t, bad.ID, parked[1].BlockedBy)
	require.Equal(t, behind2.ID, parked[2].Record.ID)
	require.Equal(t, []string{"1:Deposited", "2:Deposited"}, history("acct-a"))
	require.Equal(t, []string{"1:Deposited"}, history("acct-b"), "other streams go on")
	_ = other
	st, err := r.Status(ctx, "accounts")
	require.NoError(t, err)
	require.Equal(t, 3, st.Parked)
	require.Contains(t, st.LastError, "boom")
	require.False(t, st.LastErrorAt.IsZero())

	// Retrying while it still fails changes nothing but the attempts.
	res, err := r.RetryParked(ctx, "accounts")
	require.NoError(t, err)
	require.Equal(t, projection.RetryResult{Applied: 0, Remaining: 3}, res)
	parked, err = r.Parked(ctx, "accounts")
	require.NoError(t, err)
	require.Equal(t, 6, parked[0].Attempts)

	// Fixed: the retry applies the stream's records in order.
	acc.setFail(bad.ID, nil)
	res, err = r.RetryParked(ctx, "accounts", "acct-a")
	require.NoError(t, err)
	require.Equal(t, projection.RetryResult{Applied: 3, Remaining: 0}, res)
	require.Equal(t, []string{"1:Deposited", "2:Deposited", "3:Deposited", "4:Withdrawn", "5:Deposited"}, history("acct-a"))
	parked, err = r.Parked(ctx, "accounts")
	require.NoError(t, err)
	require.Empty(t, parked)

	// The stream is unblocked: new records apply directly.
	appendOne(t, store, acc.reg, "acct-a", Deposited{Amount: 1})
	waitHead(t, r, "accounts", store)
	require.Len(t, history("acct-a"), 6)
	require.Equal(t, expected(allRecords(t, store)), dump(t, rdb, ns))

	// Skip: a permanently failing record is parked at once; skipping it
	// leaves the record behind it parked until retried.
	c1 := newEvent(t, acc.reg, Deposited{Amount: 100})
	acc.setFail(c1.ID, projection.Permanent(errors.New("cannot ever apply")))
	_, err = store.Append(ctx, "acct-c", eventstore.Any, c1)
	require.NoError(t, err)
	appendOne(t, store, acc.reg, "acct-c", Deposited{Amount: 1})
	waitHead(t, r, "accounts", store)
	parked, err = r.Parked(ctx, "accounts")
	require.NoError(t, err)
	require.Len(t, parked, 2)
	require.Equal(t, 1, parked[0].Attempts, "permanent errors are not retried")

	n, err := r.SkipParked(ctx, "accounts", c1.ID)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	appendOne(t, store, acc.reg, "acct-c", Deposited{Amount: 2})
	waitHead(t, r, "accounts", store)
	parked, err = r.Parked(ctx, "accounts")
	require.NoError(t, err)
	require.Len(t, parked, 2, "the stream stays blocked while records are parked")
	require.Empty(t, history("acct-c"))

	res, err = r.RetryParked(ctx, "accounts", "acct-c")
	require.NoError(t, err)
	require.Equal(t, projection.RetryResult{Applied: 2}, res)
	require.Equal(t, []string{"2:Deposited", "3:Deposited"}, history("acct-c"))
	require.Equal(t, expected(allRecords(t, store), c1.ID), dump(t, rdb, ns))
}

func newEvent(t testing.TB, reg *eventstore.Registry, v any) eventstore.Event {
	t.Helper()
	ev, err := reg.Encode(v, nil)
	require.NoError(t, err)
	ev.ID = eventstore.NewEventID()
	return ev
}

// Two runners of one projection: only the lease holder applies; the other
// takes over when the first stops, or when its lease expires after a crash.
func TestTwoRunnersOneActive(t *testing.T) {
	rdb, prefix := testsvc.Redis(t)
	store := newMemstore()
	accA, accB := newAccounts(t, "accounts"), newAccounts(t, "accounts")
	ctx := context.Background()

	rA, err := projection.NewRunner(rdb, store, []projection.Projection{accA}, fastOpts(t, prefix, projection.WithOwner("A"))...)
	require.NoError(t, err)
	rB, err := projection.NewRunner(rdb, store, []projection.Projection{accB}, fastOpts(t, prefix, projection.WithOwner("B"))...)
	require.NoError(t, err)
	runA := start(t, rA)
	eventually(t, 10*time.Second, "A active", func() bool { return rA.Active("accounts") })
	start(t, rB)

	appendEvents(t, store, accA.reg, streamNames(3), 300)
	waitHead(t, rB, "accounts", store) // B sees A's progress through Redis
	require.True(t, rA.Active("accounts"))
	require.False(t, rB.Active("accounts"))
	require.NotEmpty(t, accA.applies())
	require.Empty(t, accB.applies(), "the standby applies nothing")

	// A stops: B takes over and goes on.
	runA.stop()
	appendEvents(t, store, accA.reg, streamNames(3), 100)
	waitHead(t, rB, "accounts", store)
	require.True(t, rB.Active("accounts"))
	require.NotEmpty(t, accB.applies())
	ns, err := rB.Namespace(ctx, "accounts")
	require.NoError(t, err)
	require.Equal(t, expected(allRecords(t, store)), dump(t, rdb, ns))
}

func TestStandbyTakesOverAfterCrash(t *testing.T) {
	rdb, prefix := testsvc.Redis(t)
	store := newMemstore()
	accA, accB := newAccounts(t, "accounts"), newAccounts(t, "accounts")

	rA, err := projection.NewRunner(rdb, store, []projection.Projection{accA},
		fastOpts(t, prefix, projection.WithOwner("A"), projection.WithKeepLease())...)
	require.NoError(t, err)
	runA := start(t, rA)
	eventually(t, 10*time.Second, "A active", func() bool { return rA.Active("accounts") })
	rB, err := projection.NewRunner(rdb, store, []projection.Projection{accB}, fastOpts(t, prefix, projection.WithOwner("B"))...)
	require.NoError(t, err)
	start(t, rB)

	appendEvents(t, store, accA.reg, streamNames(3), 50)
	waitHead(t, rB, "accounts", store)
	runA.stop() // crashes: the lease stays until it expires
	appendEvents(t, store, accA.reg, streamNames(3), 50)
	waitHead(t, rB, "accounts", store)
	require.True(t, rB.Active("accounts"))
	ns, err := rB.Namespace(context.Background(), "accounts")
	require.NoError(t, err)
	require.Equal(t, expected(allRecords(t, store)), dump(t, rdb, ns))
}

// A runner whose lease was taken cannot commit: fencing under WATCH.
func TestLostLeaseCannotCommit(t *testing.T) {
	rdb, prefix := testsvc.Redis(t)
	store := newMemstore()
	acc := newAccounts(t, "accounts")
	ctx := context.Background()
	r, err := projection.NewRunner(rdb, store, []projection.Projection{acc}, fastOpts(t, prefix)...)
	require.NoError(t, err)
	start(t, r)
	appendEvents(t, store, acc.reg, streamNames(2), 20)
	before := waitHead(t, r, "accounts", store)

	// Another owner takes the lease (as after a long pause of this one).
	leases, err := redislease.New(rdb, redislease.WithPrefix(prefix))
	require.NoError(t, err)
	cur, ok, err := leases.Current(ctx, "accounts:0")
	require.NoError(t, err)
	require.True(t, ok, "the runner holds partition 0's lease")
	require.NoError(t, rdb.HSet(ctx, leases.Key("accounts:0"), "holder", "intruder",
		"token", strconv.FormatUint(cur.Token+1, 10), "exp", time.Now().Add(1500*time.Millisecond).UnixMicro()).Err())
	appendEvents(t, store, acc.reg, streamNames(2), 20)
	eventually(t, 10*time.Second, "runner steps down", func() bool { return !r.Active("accounts") })
	ckpt, err := r.Reader().Checkpoint(ctx, "accounts")
	require.NoError(t, err)
	require.Equal(t, before, ckpt, "nothing committed without the lease")

	// When the intruder's lease expires, the runner takes over again.
	waitHead(t, r, "accounts", store)
	ns, err := r.Namespace(ctx, "accounts")
	require.NoError(t, err)
	require.Equal(t, expected(allRecords(t, store)), dump(t, rdb, ns))
}

// WaitFor returns once the checkpoint passes the position and times out
// with a typed error otherwise, in the runner and from a plain Reader.
func TestWaitFor(t *testing.T) {
	rdb, prefix := testsvc.Redis(t)
	store := newMemstore()
	acc := newAccounts(t, "accounts")
	r, err := projection.NewRunner(rdb, store, []projection.Projection{acc}, fastOpts(t, prefix)...)
	require.NoError(t, err)
	start(t, r)
	reader := projection.NewReader(rdb, prefix, store)

	appendEvents(t, store, acc.reg, streamNames(2), 10)
	rec := appendOne(t, store, acc.reg, "acct-0", Deposited{Amount: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, r.WaitFor(ctx, "accounts", rec.Position))
	require.NoError(t, reader.WaitFor(ctx, "accounts", rec.Position))

	// Waiting for a position that is not there yet.
	next := eventstore.Position{Tx: rec.Position.Tx + 1, Seq: rec.Position.Seq + 1}
	waited := make(chan error, 2)
	go func() { waited <- r.WaitFor(ctx, "accounts", next) }()
	go func() { waited <- reader.WaitFor(ctx, "accounts", next) }()
	got := appendOne(t, store, acc.reg, "acct-1", Deposited{Amount: 1})
	require.Equal(t, next, got.Position)
	require.NoError(t, <-waited)
	require.NoError(t, <-waited)

	// A position never reached: a typed timeout.
	far := eventstore.Position{Tx: 1 << 40, Seq: 1 << 40}
	for _, w := range []interface {
		WaitFor(context.Context, string, eventstore.Position) error
	}{r, reader} {
		// Long enough for the wait to read the checkpoint once even on a
		// loaded machine: Reached is the last checkpoint the wait saw.
		tctx, tcancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err := w.WaitFor(tctx, "accounts", far)
		tcancel()
		require.ErrorIs(t, err, projection.ErrTimeout)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		var te *projection.TimeoutError
		require.ErrorAs(t, err, &te)
		require.Equal(t, far, te.Want)
		require.Equal(t, got.Position, te.Reached)
	}
	// Cancellation is not a timeout.
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	err = r.WaitFor(cctx, "accounts", far)
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, projection.ErrTimeout)
}

// Several projections in one runner keep independent checkpoints.
func TestSeveralProjectionsIndependent(t *testing.T) {
	rdb, prefix := testsvc.Redis(t)
	store := newMemstore()
	fast, slow := newAccounts(t, "fast"), newAccounts(t, "slow")
	release := make(chan struct{})
	slow.block = release
	ctx := context.Background()

	r, err := projection.NewRunner(rdb, store, []projection.Projection{fast, slow}, fastOpts(t, prefix)...)
	require.NoError(t, err)
	start(t, r)
	appendEvents(t, store, fast.reg, streamNames(3), 200)
	head := waitHead(t, r, "fast", store)

	slowCkpt, err := r.Reader().Checkpoint(ctx, "slow")
	require.NoError(t, err)
	require.True(t, slowCkpt.Before(head), "the blocked projection did not move")
	st, err := r.Status(ctx, "slow")
	require.NoError(t, err)
	require.Equal(t, int64(200), st.LagEvents)
	require.Equal(t, head, st.Head)

	close(release)
	waitHead(t, r, "slow", store)
	for _, name := range []string{"fast", "slow"} {
		ns, err := r.Namespace(ctx, name)
		require.NoError(t, err)
		require.Equal(t, prefix+"{"+name+":0}:v1", ns.String())
		require.Equal(t, expected(allRecords(t, store)), dump(t, rdb, ns))
	}
}

// A blue/green rebuild while appends continue: nothing is lost, the pointer
// switches, the old namespace is deleted, records replayed into the new
// namespace are flagged and fire no side effects, and every event's side
// effect fires exactly once.
func TestBlueGreenRebuildWhileAppending(t *testing.T) {
	rdb, prefix := testsvc.Redis(t)
	store := newMemstore()
	acc := newAccounts(t, "accounts")
	ctx := context.Background()
	appendEvents(t, store, acc.reg, streamNames(5), 3000)

	r, err := projection.NewRunner(rdb, store, []projection.Projection{acc}, fastOpts(t, prefix, projection.WithBatchSize(200))...)
	require.NoError(t, err)
	start(t, r)
	initialHead := waitHead(t, r, "accounts", store)
	require.Empty(t, acc.sideEffects())

	// Appends continue during the rebuild.
	stopAppends := make(chan struct{})
	appendsDone := make(chan struct{})
	var appended atomic.Int64
	go func() {
		defer close(appendsDone)
		streams := streamNames(5)
		for i := 0; ; i++ {
			select {
			case <-stopAppends:
				return
			default:
			}
			ev, err := acc.reg.Encode(Deposited{Amount: int64(i%9 + 1)}, nil)
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := store.Append(ctx, streams[i%5], eventstore.Any, ev); err != nil {
				t.Error(err)
				return
			}
			appended.Add(1)
			time.Sleep(time.Millisecond) // a steady trickle, not a flood
		}
	}()
	eventually(t, 10*time.Second, "appends under way", func() bool { return appended.Load() > 50 })
	require.NoError(t, r.Rebuild(ctx, "accounts"))
	ns, err := r.Namespace(ctx, "accounts")
	require.NoError(t, err)
	require.Equal(t, int64(2), ns.Version)
	// Appends go on until v2 applies them live: the partition switches to
	// v2 between batches, a moment after the pointer (on a loaded machine,
	// after any fixed number of appends).
	atSwitch := appended.Load()
	eventually(t, 10*time.Second, "more appends after the switch, applied live to v2", func() bool {
		if appended.Load() < atSwitch+50 {
			return false
		}
		for _, a := range acc.applies() {
			if a.version == 2 && !a.replay {
				return true
			}
		}
		return false
	})
	close(stopAppends)
	<-appendsDone
	t.Logf("appended %d events during and after the rebuild", appended.Load())
	waitHead(t, r, "accounts", store)

	recs := allRecords(t, store)
	require.Equal(t, expected(recs), dump(t, rdb, ns), "nothing lost, nothing twice")
	eventually(t, 10*time.Second, "old namespace deleted", func() bool {
		return countKeys(t, rdb, projection.NamespacePatterns(prefix, "accounts", 1, 1)) == 0
	})

	// Side effects: exactly once for every event after the initial build.
	effects := acc.sideEffects()
	for _, rec := range recs {
		if rec.Position.After(initialHead) {
			require.Equal(t, 1, effects[rec.ID], "side effect of %s", rec.Position)
		} else {
			require.Zero(t, effects[rec.ID])
		}
	}
	// The replay flag: v2 was replayed up to the switch and live after it;
	// v1 was live after its initial build.
	var lastReplay, firstLive eventstore.Position
	sawReplay := false
	for _, a := range acc.applies() {
		switch {
		case a.version == 1:
			require.Equal(t, !a.position.After(initialHead), a.replay, "v1 at %s", a.position)
		case a.replay:
			sawReplay = true
			if a.position.After(lastReplay) {
				lastReplay = a.position
			}
		case firstLive.IsZero() || a.position.Before(firstLive):
			firstLive = a.position
		}
	}
	require.True(t, sawReplay)
	require.False(t, firstLive.IsZero())
	v1Live := 0
	for _, a := range acc.applies() {
		if a.version == 1 && !a.replay {
			v1Live++
		}
	}
	require.Positive(t, v1Live, "v1 kept following live events during the rebuild")
	require.True(t, lastReplay.Before(firstLive), "replay only before the switch")

	st, err := r.Status(ctx, "accounts")
	require.NoError(t, err)
	require.Equal(t, int64(0), st.Rebuilding)
	require.Equal(t, int64(2), st.Version)
}

func TestRebuildNeedsActiveRunner(t *testing.T) {
	rdb, prefix := testsvc.Redis(t)
	store := newMemstore()
	r, err := projection.NewRunner(rdb, store, []projection.Projection{newAccounts(t, "accounts")}, fastOpts(t, prefix)...)
	require.NoError(t, err)
	// No runner holds any partition: the request fails at once.
	require.ErrorIs(t, r.Rebuild(context.Background(), "accounts"), projection.ErrUnknownProjection)
	rn := start(t, r)
	waitHead(t, r, "accounts", store)
	rn.stop()
	require.ErrorIs(t, r.Rebuild(context.Background(), "accounts"), projection.ErrNoActiveRunner)
	require.ErrorIs(t, r.Rebuild(context.Background(), "nope"), projection.ErrUnknownProjection)
	_, err = r.RetryParked(context.Background(), "accounts")
	require.ErrorIs(t, err, projection.ErrNotActive)
}

// A projection's first build replays the history the feed held when the
// build began; events appended while it runs are new events (their side
// effects fire once), even though the catch-up applies them, and a runner
// that takes the first build over keeps the same history.
func TestFirstBuildHistoryEndsAtItsStart(t *testing.T) {
	rdb, prefix := testsvc.Redis(t)
	store := newMemstore()
	acc := newAccounts(t, "accounts")
	appendEvents(t, store, acc.reg, streamNames(3), 500)
	history := testsvc.SettledHead(t, store)

	// The first runner stops inside its first batch, before committing.
	release := make(chan struct{})
	acc.block = release
	r1, err := projection.NewRunner(rdb, store, []projection.Projection{acc}, fastOpts(t, prefix, projection.WithBatchSize(100))...)
	require.NoError(t, err)
	run1 := start(t, r1)
	eventually(t, 10*time.Second, "the first build under way", func() bool { return len(acc.applies()) > 0 })
	appendEvents(t, store, acc.reg, streamNames(3), 60)
	run1.stop()
	close(release)

	// Its successor finishes the build, and more events arrive meanwhile.
	r2, err := projection.NewRunner(rdb, store, []projection.Projection{acc}, fastOpts(t, prefix, projection.WithBatchSize(100))...)
	require.NoError(t, err)
	start(t, r2)
	appendEvents(t, store, acc.reg, streamNames(3), 40)
	waitHead(t, r2, "accounts", store)

	recs := allRecords(t, store)
	require.Len(t, recs, 600)
	ns, err := r2.Namespace(context.Background(), "accounts")
	require.NoError(t, err)
	require.Equal(t, expected(recs), dump(t, rdb, ns), "nothing lost, nothing twice")
	effects := acc.sideEffects()
	for _, rec := range recs {
		if rec.Position.After(history) {
			require.Equal(t, 1, effects[rec.ID], "side effect of the new event at %s", rec.Position)
		} else {
			require.Zero(t, effects[rec.ID], "side effect of the history at %s", rec.Position)
		}
	}
	for _, a := range acc.applies() {
		require.Equal(t, !a.position.After(history), a.replay, "replay flag at %s", a.position)
	}
}

// wrongType is a projection one of whose records queues a command that
// fails inside EXEC (a hash command on a string key): its apply succeeds,
// its commit does not fully.
type wrongType struct {
	mu      sync.Mutex
	effects map[uuid.UUID]int
}

func (w *wrongType) Name() string { return "wrongtype" }

func (w *wrongType) Apply(ctx context.Context, b *projection.Batch, rec eventstore.Record) error {
	p := b.Pipe()
	p.Incr(ctx, b.Key("count"))
	p.RPush(ctx, b.Key("seen", rec.StreamID), rec.Version)
	if string(rec.Data) == `"bad"` {
		p.HSet(ctx, b.Key("count"), "field", 1) // WRONGTYPE inside EXEC
	}
	b.AfterCommit(func(context.Context) {
		w.mu.Lock()
		w.effects[rec.ID]++
		w.mu.Unlock()
	})
	return nil
}

// A record whose command fails inside its batch's EXEC is parked as
// partially applied (its side effects do not fire), the checkpoint moves
// on, and later records of its stream wait behind it while other streams
// go on.
func TestCommandFailingInsideExecParksItsRecord(t *testing.T) {
	rdb, prefix := testsvc.Redis(t)
	store := newMemstore()
	ctx := context.Background()
	appendRaw := func(stream, data string) eventstore.Record {
		t.Helper()
		res, err := store.Append(ctx, stream, eventstore.Any, eventstore.Event{ID: eventstore.NewEventID(), Type: "E", Data: []byte(data)})
		require.NoError(t, err)
		recs, err := eventstore.Collect(store.ReadStream(ctx, stream, res.Version()))
		require.NoError(t, err)
		return recs[0]
	}
	appendRaw("a", `"ok"`)
	bad := appendRaw("a", `"bad"`)
	appendRaw("b", `"ok"`)

	w := &wrongType{effects: map[uuid.UUID]int{}}
	r, err := projection.NewRunner(rdb, store, []projection.Projection{w}, fastOpts(t, prefix)...)
	require.NoError(t, err)
	start(t, r)
	waitHead(t, r, "wrongtype", store)

	// The record is parked right after its batch commits (the checkpoint
	// may be visible a moment earlier).
	var parked []projection.ParkedRecord
	eventually(t, 10*time.Second, "the partially applied record parked", func() bool {
		var err error
		parked, err = r.Parked(ctx, "wrongtype")
		require.NoError(t, err)
		return len(parked) > 0
	})
	require.Len(t, parked, 1)
	require.Equal(t, bad.ID, parked[0].Record.ID)
	require.True(t, parked[0].Partial)
	require.Contains(t, parked[0].Error, "WRONGTYPE")
	w.mu.Lock()
	require.Zero(t, w.effects[bad.ID], "no side effect for a partially applied record")
	w.mu.Unlock()
	status, err := r.Status(ctx, "wrongtype")
	require.NoError(t, err)
	require.Equal(t, 1, status.Parked)
	require.Contains(t, status.LastError, "partially applied")

	// Later records of its stream wait behind it; other streams go on.
	later := appendRaw("a", `"ok"`)
	other := appendRaw("b", `"ok"`)
	waitHead(t, r, "wrongtype", store)
	parked, err = r.Parked(ctx, "wrongtype")
	require.NoError(t, err)
	require.Len(t, parked, 2)
	require.Equal(t, later.ID, parked[1].Record.ID)
	require.Equal(t, bad.ID, parked[1].BlockedBy)
	w.mu.Lock()
	defer w.mu.Unlock()
	require.Equal(t, 1, w.effects[other.ID])
	require.Zero(t, w.effects[later.ID])
}
