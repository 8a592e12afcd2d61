package projection_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/outbox"
	"github.com/eskit/eskit/projection"
)

const pgSchema = "eskit"

func newPGStore(t testing.TB) *pgstore.Store {
	t.Helper()
	ctx := context.Background()
	pool := testsvc.Pool(t)
	require.NoError(t, pgstore.Migrate(ctx, pool, pgSchema))
	store, err := pgstore.New(ctx, pool, pgstore.WithSchema(pgSchema))
	require.NoError(t, err)
	t.Cleanup(store.Close)
	return store
}

// End to end on the real services: PostgreSQL store, outbox relay to
// JetStream, runner live from the consumer, a rebuild while concurrent
// appends continue, and read-your-writes.
func TestEndToEndPostgres(t *testing.T) {
	rdb, prefix := testsvc.Redis(t)
	ctx := context.Background()
	pool := testsvc.Pool(t)
	require.NoError(t, pgstore.Migrate(ctx, pool, pgSchema))
	store, err := pgstore.New(ctx, pool, pgstore.WithSchema(pgSchema))
	require.NoError(t, err)
	t.Cleanup(store.Close)
	b := newBroker(t)

	relay, err := outbox.NewRelay(store, pool, b.js, outbox.WithSchema(pgSchema), outbox.WithPrefix(b.prefix))
	require.NoError(t, err)
	rctx, rcancel := context.WithCancel(ctx)
	relayDone := make(chan struct{})
	go func() { defer close(relayDone); _ = relay.Run(rctx) }()
	t.Cleanup(func() { rcancel(); <-relayDone })

	acc := newAccounts(t, "accounts")
	appendEvents(t, store, acc.reg, streamNames(4), 200)
	r, err := projection.NewRunner(rdb, store, []projection.Projection{acc},
		fastOpts(t, prefix, projection.WithJetStream(b.js, b.stream), projection.WithBatchSize(100))...)
	require.NoError(t, err)
	start(t, r)
	waitHead(t, r, "accounts", store)

	// Concurrent writers while the projection is rebuilt.
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			appendEvents(t, store, acc.reg, []string{streamNames(8)[w], streamNames(8)[w+4]}, 100)
		})
	}
	require.NoError(t, r.Rebuild(ctx, "accounts"))
	wg.Wait()

	// Read your writes: the position of an append is visible once WaitFor
	// returns.
	ev, err := acc.reg.Encode(Deposited{Amount: 42}, nil)
	require.NoError(t, err)
	res, err := store.Append(ctx, "acct-x", eventstore.NoStream, ev)
	require.NoError(t, err)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, r.WaitFor(wctx, "accounts", res.Position))
	ns, err := r.Namespace(ctx, "accounts")
	require.NoError(t, err)
	require.Equal(t, int64(2), ns.Version)
	bal, err := rdb.HGet(ctx, ns.Key("balance"), "acct-x").Int64()
	require.NoError(t, err)
	require.Equal(t, int64(42), bal)

	waitHead(t, r, "accounts", store)
	require.Equal(t, expected(allRecords(t, store)), dump(t, rdb, ns))
	st, err := r.Status(ctx, "accounts")
	require.NoError(t, err)
	require.Equal(t, int64(0), st.LagEvents)
}
