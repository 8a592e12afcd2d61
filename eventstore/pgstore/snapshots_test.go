package pgstore_test

import (
	"testing"

	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/eventstore/pgstore/pgtest"
	"github.com/eskit/eskit/snapshot"
	"github.com/eskit/eskit/snapshot/snapshottest"
)

// The PostgreSQL snapshot store keeps the snapshot.Store contract, on a
// schema of its own and on a store's.
func TestSnapshots(t *testing.T) {
	snapshottest.Run(t, func(t *testing.T) snapshot.Store {
		pool := pgtest.Pool(t)
		const schema = "eskit_snap"
		if err := pgstore.Migrate(t.Context(), pool, schema); err != nil {
			t.Fatalf("migrate: %v", err)
		}
		return pgstore.NewSnapshots(pool, schema)
	})
	snapshottest.Run(t, func(t *testing.T) snapshot.Store {
		st, err := pgstore.New(t.Context(), pgtest.Pool(t), pgstore.WithAutoMigrate())
		if err != nil {
			t.Fatalf("pgstore.New: %v", err)
		}
		t.Cleanup(st.Close)
		return st.Snapshots()
	})
}
