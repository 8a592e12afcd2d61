package outbox_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/memstore"
	"github.com/eskit/eskit/internal/infra/natstest"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/lease"
	"github.com/eskit/eskit/outbox"
)

// Relays in one process, with no PostgreSQL: MemoryCheckpoints elects one
// leader and keeps the checkpoint; the standby takes over, from the
// checkpoint, when the leader stops.
func TestRelaysWithMemoryCheckpoints(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := newBroker(t)
	store := memstore.New()
	cps := outbox.NewMemoryCheckpoints()
	appendEvents(t, ctx, store, awkwardStreams, 100, "a")

	_, err := outbox.NewRelay(store, nil, b.js, fastOpts(t, b)...)
	require.Error(t, err, "without a pool, checkpoints are required")

	first, err := outbox.NewRelay(store, nil, b.js, fastOpts(t, b, outbox.WithCheckpoints(cps))...)
	require.NoError(t, err)
	second, err := outbox.NewRelay(store, nil, b.js, fastOpts(t, b, outbox.WithCheckpoints(cps))...)
	require.NoError(t, err)
	stopFirst := runRelay(t, first)
	eventually(t, 10*time.Second, "the first relay to lead", func() bool { return first.Stats().Leader })
	runRelay(t, second)
	eventually(t, 20*time.Second, "the leader to catch up", caughtUp(t, first, store))
	require.False(t, second.Stats().Leader, "one leader")
	require.Equal(t, testsvc.SettledHead(t, store), cps.Position(outbox.DefaultName), "the checkpoint is stored")

	stopFirst()
	eventually(t, 10*time.Second, "the standby to take over", func() bool { return second.Stats().Leader })
	appendEvents(t, ctx, store, awkwardStreams, 50, "b")
	eventually(t, 20*time.Second, "the new leader to catch up", caughtUp(t, second, store))
	require.Equal(t, uint64(50), second.Stats().Published, "the new leader resumed from the checkpoint")
	requireSameFeed(t, feedAll(t, store), b.records(t))
}

// A deposed leader can no longer move the checkpoint.
func TestMemoryCheckpointsFenceTheDeposedLeader(t *testing.T) {
	ctx := context.Background()
	cps := outbox.NewMemoryCheckpoints()
	keeper := func(holder string) *lease.Keeper {
		k, err := lease.NewKeeper(cps.Leases(), outbox.LeaseName("r"), lease.WithTTL(time.Minute), lease.WithHolder(holder),
			lease.WithRetryInterval(10*time.Millisecond), lease.WithLogger(slog.New(slog.DiscardHandler)))
		require.NoError(t, err)
		return k
	}
	h, err := keeper("first").Hold(ctx)
	require.NoError(t, err)
	l, err := cps.Lead(ctx, "r", h)
	require.NoError(t, err)
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err = keeper("second").Hold(short)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded, "one leader at a time")
	pos := eventstore.Position{Tx: 1, Seq: 2}
	require.NoError(t, l.Save(ctx, pos))
	require.NoError(t, h.Release(ctx))
	err = l.Save(ctx, eventstore.Position{Tx: 9, Seq: 9})
	require.ErrorIs(t, err, outbox.ErrNotLeader)
	require.ErrorIs(t, err, lease.ErrLost)
	require.ErrorIs(t, l.Check(ctx), outbox.ErrNotLeader)
	h2, err := keeper("second").Hold(ctx)
	require.NoError(t, err)
	defer func() { require.NoError(t, h2.Release(ctx)) }()
	next, err := cps.Lead(ctx, "r", h2)
	require.NoError(t, err)
	got, err := next.Load(ctx)
	require.NoError(t, err)
	require.Equal(t, pos, got)
	require.ErrorIs(t, l.Save(ctx, eventstore.Position{Tx: 9, Seq: 9}), outbox.ErrNotLeader)
	require.Equal(t, pos, cps.Position("r"))
}

// A leader cut off from NATS (but not from PostgreSQL) steps down after
// the lease TTL, so that a standby that can reach NATS takes over.
func TestLeaderCutOffFromNATSStepsDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := newBroker(t)
	pool := newDB(t)
	store := memstore.New()
	appendEvents(t, ctx, store, awkwardStreams, 30, "a")

	cutJS := natstest.JetStream(t, b.url)
	cut, err := outbox.NewRelay(store, pool, cutJS, fastOpts(t, b)...)
	require.NoError(t, err)
	runRelay(t, cut)
	eventually(t, 10*time.Second, "the first relay to lead and catch up", func() bool {
		return cut.Stats().Leader && caughtUp(t, cut, store)()
	})
	standby, err := outbox.NewRelay(store, pool, b.js, fastOpts(t, b)...)
	require.NoError(t, err)
	runRelay(t, standby)
	requireClosed(t, standby.Started(), "Started")
	eventually(t, 10*time.Second, "the standby to see the leader", func() bool {
		return standby.Stats().Lease.Token == cut.Stats().Lease.Token && !standby.Stats().LeaderProgressAt.IsZero()
	})
	require.False(t, standby.Stats().Leader)

	cutJS.Conn().Close()
	start := time.Now()
	appendEvents(t, ctx, store, awkwardStreams, 30, "b")
	eventually(t, 4*testLeaseTTL+5*time.Second, "the standby to take over", func() bool { return standby.Stats().Leader })
	t.Logf("the standby took over %s after the leader lost NATS (ttl %s)", time.Since(start), testLeaseTTL)
	require.False(t, cut.Stats().Leader)
	require.ErrorIs(t, cut.Stats().LastError, outbox.ErrDisconnected)
	eventually(t, 20*time.Second, "the new leader to catch up", caughtUp(t, standby, store))
	requireDeliveredOnce(t, feedAll(t, store), b.records(t))
}
