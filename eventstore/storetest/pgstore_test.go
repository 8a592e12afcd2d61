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
