package pgstore_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/eskit/eskit/internal/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/eventstore/pgstore/pgtest"
)

func TestMigrateConcurrentAndIdempotent(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t)

	st, err := pgstore.MigrationStatus(ctx, pool, "eskit")
	require.NoError(t, err)
	require.Empty(t, st.Applied)
	require.NotEmpty(t, st.Pending)
	require.False(t, st.UpToDate())

	const n = 6
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = pgstore.Migrate(ctx, pool, "eskit")
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	require.NoError(t, pgstore.Migrate(ctx, pool, "eskit"))

	st, err = pgstore.MigrationStatus(ctx, pool, "eskit")
	require.NoError(t, err)
	require.True(t, st.UpToDate())
	require.Equal(t, 1, st.Applied[0].Version)
	require.False(t, st.Applied[0].AppliedAt.IsZero())

	var count int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM eskit.schema_migrations").Scan(&count))
	require.Equal(t, len(st.Applied), count)

	// The tables other packages code against exist with their columns.
	_, err = pool.Exec(ctx, `INSERT INTO eskit.snapshots (stream_id, version, schema_version, state) VALUES ('s', 1, 1, '\x00')`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO eskit.checkpoints (name, pos_tx, pos_seq) VALUES ('p', 1, 2)`)
	require.NoError(t, err)
	// No session-level lock is left behind.
	var locks int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks
		WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&locks))
	require.Zero(t, locks)
}

func TestMigrateRejectsBadSchema(t *testing.T) {
	pool := pgtest.Pool(t)
	for _, name := range []string{"", "Eskit", "1abc", "a-b", `x"; DROP TABLE y; --`, "pg_catalog", "a_very_long_schema_name_that_is_well_over_the_limit_of_56_bytes"} {
		err := pgstore.Migrate(context.Background(), pool, name)
		require.Error(t, err, name)
		require.True(t, errors.Is(err, eventstore.ErrInvalidArgument), name)
	}
}
