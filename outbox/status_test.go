package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/outbox"
)

// ReadStatus shows a relay's checkpoint and leader from PostgreSQL alone:
// nothing before the relay first led, the lease holder while it leads, the
// checkpoint it left once it stopped.
func TestReadStatus(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := newBroker(t)
	pool := newDB(t)
	store := newPgStore(t, pool)
	const name = "status-relay"

	st, err := outbox.ReadStatus(ctx, pool, testSchema, name)
	require.NoError(t, err)
	require.Equal(t, outbox.RelayStatus{}, st, "no relay has led")

	appendEvents(t, ctx, store, awkwardStreams, 20, "a")
	waitFeed(t, store, 20)
	r, err := outbox.NewRelay(store, pool, b.js, fastOpts(t, b, outbox.WithName(name))...)
	require.NoError(t, err)
	stop := runRelay(t, r)
	eventually(t, 20*time.Second, "relay to catch up", caughtUp(t, r, store))
	eventually(t, 10*time.Second, "the checkpoint to be written", func() bool {
		st, err = outbox.ReadStatus(ctx, pool, testSchema, name)
		require.NoError(t, err)
		return st.Checkpoint == r.Stats().Position
	})
	require.True(t, st.HasCheckpoint)
	require.True(t, st.Leader)
	require.Equal(t, outbox.LeaseName(name), st.Lease.Name)
	require.Equal(t, r.Stats().Lease.Holder, st.Lease.Holder)
	require.Equal(t, r.Stats().Lease.Token, st.Lease.Token)
	require.Positive(t, st.Lease.Token)
	require.WithinDuration(t, time.Now(), st.Lease.Expires, time.Minute)
	require.WithinDuration(t, time.Now(), st.CheckpointAt, time.Minute)

	// Other names and schemas are other relays.
	other, err := outbox.ReadStatus(ctx, pool, testSchema, "other")
	require.NoError(t, err)
	require.Equal(t, outbox.RelayStatus{}, other)
	_, err = outbox.ReadStatus(ctx, pool, "no_such_schema", name)
	require.Error(t, err)

	want := st.Checkpoint
	stop()
	eventually(t, 10*time.Second, "the lease to be free", func() bool {
		st, err = outbox.ReadStatus(ctx, pool, testSchema, name)
		require.NoError(t, err)
		return !st.Leader
	})
	require.True(t, st.HasCheckpoint)
	require.Equal(t, want, st.Checkpoint)
	require.Zero(t, st.Lease)
}
