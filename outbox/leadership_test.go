package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/memstore"
	"github.com/eskit/eskit/internal/infra/testsvc"
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
	l, err := cps.Lead(ctx, "r")
	require.NoError(t, err)
	require.NotNil(t, l)
	other, err := cps.Lead(ctx, "r")
	require.NoError(t, err)
	require.Nil(t, other, "one leader at a time")
	pos := eventstore.Position{Tx: 1, Seq: 2}
	require.NoError(t, l.Save(ctx, pos))
	l.Close(ctx)
	require.ErrorIs(t, l.Save(ctx, eventstore.Position{Tx: 9, Seq: 9}), outbox.ErrNotLeader)
	require.ErrorIs(t, l.Check(ctx), outbox.ErrNotLeader)
	next, err := cps.Lead(ctx, "r")
	require.NoError(t, err)
	got, err := next.Load(ctx)
	require.NoError(t, err)
	require.Equal(t, pos, got)
}
