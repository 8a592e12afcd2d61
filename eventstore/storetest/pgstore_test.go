package storetest_test

import (
	"context"
	"testing"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/eventstore/pgstore/pgtest"
	"github.com/eskit/eskit/eventstore/storetest"
)

// The PostgreSQL store passes the conformance suite.
func TestPgstoreConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T) eventstore.Store {
			st, err := pgstore.New(context.Background(), pgtest.Pool(t), pgstore.WithAutoMigrate())
			if err != nil {
				t.Fatalf("pgstore.New: %v", err)
			}
			t.Cleanup(st.Close)
			return st
		},
		AppendAndRollback: func(ctx context.Context, s eventstore.Store, appends ...eventstore.StreamAppend) error {
			ps := s.(*pgstore.Store)
			tx, err := ps.Pool().Begin(ctx)
			if err != nil {
				return err
			}
			defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
			if _, err := ps.AppendTx(ctx, tx, appends...); err != nil {
				return err
			}
			return tx.Rollback(ctx)
		},
	})
}

// The PostgreSQL store passes the conformance suite on a large events
// table too: appends after an exact version then take one statement, and
// loads no longer turn sequential scans off (see pgstore's
// checkTableSize). The table is made large with rows written and deleted
// before the store opens, so the suite sees an empty store.
func TestPgstoreConformanceLargeTable(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T) eventstore.Store {
			ctx := context.Background()
			pool := pgtest.Pool(t)
			if err := pgstore.Migrate(ctx, pool, pgstore.DefaultSchema); err != nil {
				t.Fatalf("migrate: %v", err)
			}
			// 4,400 rows of 1,888 bytes (stored inline, 4 a page): 1,100
			// pages, which no vacuum gives back.
			if _, err := pool.Exec(ctx, `ALTER TABLE eskit.events SET (vacuum_truncate = false)`); err != nil {
				t.Fatalf("pad the events table: %v", err)
			}
			if _, err := pool.Exec(ctx, `INSERT INTO eskit.events (tx, id, stream_id, version, event_type, data)
SELECT 0, gen_random_uuid(), 'padding', g, 'Padding', convert_to(repeat(md5(g::text), 59), 'UTF8')
FROM generate_series(1, 4400) g`); err != nil {
				t.Fatalf("pad the events table: %v", err)
			}
			if _, err := pool.Exec(ctx, `DELETE FROM eskit.events`); err != nil {
				t.Fatalf("pad the events table: %v", err)
			}
			var pages int64
			if err := pool.QueryRow(ctx, `SELECT pg_relation_size('eskit.events') / current_setting('block_size')::bigint`).Scan(&pages); err != nil || pages < 1000 {
				t.Fatalf("the padded events table has %d pages (%v), want at least 1,000", pages, err)
			}
			st, err := pgstore.New(ctx, pool)
			if err != nil {
				t.Fatalf("pgstore.New: %v", err)
			}
			t.Cleanup(st.Close)
			return st
		},
	})
}
