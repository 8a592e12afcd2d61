package outbox

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/lease"
)

// hold takes the lease of the relay name on cps with a TTL long enough
// that the holder's own deadline never passes during the test.
func hold(t *testing.T, ctx context.Context, cps *PostgresCheckpoints, name, holder string) *lease.Held {
	t.Helper()
	k, err := lease.NewKeeper(cps.Leases(), LeaseName(name), lease.WithTTL(time.Minute), lease.WithHolder(holder),
		lease.WithRetryInterval(20*time.Millisecond), lease.WithLogger(slog.New(slog.DiscardHandler)))
	require.NoError(t, err)
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	h, err := k.Hold(context.WithoutCancel(hctx))
	require.NoError(t, err)
	t.Cleanup(func() { _ = h.Release(context.Background()) })
	return h
}

func leaderSession(t *testing.T, ctx context.Context, cps *PostgresCheckpoints, name string, h *lease.Held) *session {
	t.Helper()
	l, err := cps.Lead(ctx, name, h)
	require.NoError(t, err)
	t.Cleanup(func() { l.Close(context.Background()) })
	return l.(*session)
}

func checkpointsDB(t *testing.T, ctx context.Context) (*pgxpool.Pool, *PostgresCheckpoints) {
	t.Helper()
	pool := testsvc.Pool(t)
	require.NoError(t, pgstore.Migrate(ctx, pool, "eskit"))
	return pool, NewPostgresCheckpoints(pool, "eskit")
}

func storedCheckpoint(t *testing.T, ctx context.Context, pool *pgxpool.Pool, name string) eventstore.Position {
	t.Helper()
	pos, err := ReadCheckpoint(ctx, pool, "eskit", name)
	require.NoError(t, err)
	return pos
}

func TestDeposedLeaderCannotWriteCheckpoint(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("lease released", func(t *testing.T) {
		t.Parallel()
		pool, cps := checkpointsDB(t, ctx)
		h := hold(t, ctx, cps, "r1", "first")
		leader := leaderSession(t, ctx, cps, "r1", h)
		pos, err := leader.Load(ctx)
		require.NoError(t, err)
		require.True(t, pos.IsZero())
		require.NoError(t, leader.Save(ctx, eventstore.Position{Tx: 5, Seq: 7}))
		require.NoError(t, leader.Check(ctx))

		// Nobody else can take the lease while it is held.
		_, err = cps.Leases().Acquire(ctx, LeaseName("r1"), "other", time.Minute)
		require.ErrorIs(t, err, lease.ErrHeld)

		// The leader gives its lease up: its session can no longer write.
		require.NoError(t, h.Release(ctx))
		err = leader.Save(ctx, eventstore.Position{Tx: 9, Seq: 9})
		require.ErrorIs(t, err, ErrNotLeader)
		require.ErrorIs(t, err, lease.ErrLost)
		require.ErrorIs(t, leader.Check(ctx), ErrNotLeader)

		// The new leader finds the old leader's last accepted checkpoint.
		h2 := hold(t, ctx, cps, "r1", "second")
		require.Greater(t, h2.Token(), h.Token())
		other := leaderSession(t, ctx, cps, "r1", h2)
		pos, err = other.Load(ctx)
		require.NoError(t, err)
		require.Equal(t, eventstore.Position{Tx: 5, Seq: 7}, pos)
		require.NoError(t, other.Save(ctx, eventstore.Position{Tx: 6, Seq: 1}))
		require.ErrorIs(t, leader.Save(ctx, eventstore.Position{Tx: 9, Seq: 9}), ErrNotLeader)
		require.Equal(t, eventstore.Position{Tx: 6, Seq: 1}, storedCheckpoint(t, ctx, pool, "r1"))
	})

	// The leader's lease expires while it does not know (it froze, or its
	// renewals are cut off), and another relay takes over: the deposed
	// leader's own checks still pass, but the lease table refuses its
	// write in the write's own statement.
	t.Run("lease taken over", func(t *testing.T) {
		t.Parallel()
		pool, cps := checkpointsDB(t, ctx)
		h := hold(t, ctx, cps, "r2", "first")
		leader := leaderSession(t, ctx, cps, "r2", h)
		_, err := leader.Load(ctx)
		require.NoError(t, err)
		require.NoError(t, leader.Save(ctx, eventstore.Position{Tx: 3, Seq: 3}))

		expired, err := ExpireLease(ctx, pool, "eskit", "r2")
		require.NoError(t, err)
		require.True(t, expired)
		h2 := hold(t, ctx, cps, "r2", "second")
		require.NoError(t, h.Err(), "the deposed holder does not know yet")

		err = leader.Save(ctx, eventstore.Position{Tx: 9, Seq: 9})
		require.ErrorIs(t, err, ErrNotLeader)
		require.ErrorIs(t, err, lease.ErrFenced)
		require.ErrorIs(t, leader.Check(ctx), lease.ErrFenced)
		require.Equal(t, eventstore.Position{Tx: 3, Seq: 3}, storedCheckpoint(t, ctx, pool, "r2"))

		other := leaderSession(t, ctx, cps, "r2", h2)
		_, err = other.Load(ctx)
		require.NoError(t, err)
		require.NoError(t, other.Save(ctx, eventstore.Position{Tx: 4, Seq: 1}))
		require.Equal(t, eventstore.Position{Tx: 4, Seq: 1}, storedCheckpoint(t, ctx, pool, "r2"))
	})

	t.Run("connection killed", func(t *testing.T) {
		t.Parallel()
		pool, cps := checkpointsDB(t, ctx)
		h := hold(t, ctx, cps, "r3", "first")
		leader := leaderSession(t, ctx, cps, "r3", h)
		_, err := leader.Load(ctx)
		require.NoError(t, err)
		_, err = pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, int32(leader.conn.PgConn().PID()))
		require.NoError(t, err)
		require.Error(t, leader.Save(ctx, eventstore.Position{Tx: 1, Seq: 1}))
		require.Zero(t, storedCheckpoint(t, ctx, pool, "r3").Tx)
	})
}

func TestLeaseNameDependsOnName(t *testing.T) {
	t.Parallel()
	require.Equal(t, "relay:outbox", LeaseName("outbox"))
	require.NotEqual(t, LeaseName("outbox"), LeaseName("other"))
}
