package pgstore_test

import (
	"context"
	"testing"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/eventstore/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T) eventstore.Store { return newStore(t) },
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
