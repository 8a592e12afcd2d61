package outbox

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/internal/infra/testsvc"
)

// leaderSession takes the lock for name on a dedicated connection.
func leaderSession(t *testing.T, ctx context.Context, name string) (*session, func() *session) {
	t.Helper()
	pool := testsvc.Pool(t)
	require.NoError(t, pgstore.Migrate(ctx, pool, "eskit"))
	object := lockKey("eskit", name)
	open := func() *session {
		conn, err := acquire(ctx, pool)
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close(context.Background()) })
		return &session{conn: conn, table: checkpointTable("eskit"), name: name, object: object}
	}
	s := open()
	ok, err := tryLock(ctx, s.conn, object)
	require.NoError(t, err)
	require.True(t, ok)
	return s, open
}

func TestDeposedLeaderCannotWriteCheckpoint(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("lock released", func(t *testing.T) {
		t.Parallel()
		leader, open := leaderSession(t, ctx, "r1")
		pos, err := leader.Load(ctx)
		require.NoError(t, err)
		require.True(t, pos.IsZero())
		require.NoError(t, leader.Save(ctx, eventstore.Position{Tx: 5, Seq: 7}))

		// A second connection cannot take the lock nor write.
		other := open()
		ok, err := tryLock(ctx, other.conn, other.object)
		require.NoError(t, err)
		require.False(t, ok)
		require.ErrorIs(t, other.Save(ctx, eventstore.Position{Tx: 9, Seq: 9}), ErrNotLeader)
		require.ErrorIs(t, other.Check(ctx), ErrNotLeader)

		// The leader loses its lock while its connection lives on.
		_, err = leader.conn.Exec(ctx, `SELECT pg_advisory_unlock($1::int4, $2::int4)`, lockClass, leader.object)
		require.NoError(t, err)
		require.ErrorIs(t, leader.Save(ctx, eventstore.Position{Tx: 9, Seq: 9}), ErrNotLeader)
		require.ErrorIs(t, leader.Check(ctx), ErrNotLeader)

		// The new leader finds the old leader's last accepted checkpoint.
		ok, err = tryLock(ctx, other.conn, other.object)
		require.NoError(t, err)
		require.True(t, ok)
		pos, err = other.Load(ctx)
		require.NoError(t, err)
		require.Equal(t, eventstore.Position{Tx: 5, Seq: 7}, pos)
		require.NoError(t, other.Save(ctx, eventstore.Position{Tx: 6, Seq: 1}))
	})

	t.Run("connection killed", func(t *testing.T) {
		t.Parallel()
		leader, open := leaderSession(t, ctx, "r2")
		_, err := leader.Load(ctx)
		require.NoError(t, err)
		killer := open()
		_, err = killer.conn.Exec(ctx, `SELECT pg_terminate_backend($1)`, int32(leader.conn.PgConn().PID()))
		require.NoError(t, err)
		require.Error(t, leader.Save(ctx, eventstore.Position{Tx: 1, Seq: 1}))

		var tx int64
		require.NoError(t, killer.conn.QueryRow(ctx, `SELECT pos_tx FROM eskit.checkpoints WHERE name = 'r2'`).Scan(&tx))
		require.Zero(t, tx)
	})
}

func TestLockKeyDependsOnSchemaAndName(t *testing.T) {
	t.Parallel()
	require.Equal(t, lockKey("eskit", "outbox"), lockKey("eskit", "outbox"))
	require.NotEqual(t, lockKey("eskit", "outbox"), lockKey("eskit", "other"))
	require.NotEqual(t, lockKey("eskit", "outbox"), lockKey("other", "outbox"))
	require.GreaterOrEqual(t, lockKey("x", "y"), int32(0))
}
