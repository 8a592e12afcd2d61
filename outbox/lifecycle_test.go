package outbox_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/eventstore/memstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/natsevent"
	"github.com/eskit/eskit/outbox"
)

// runUntilReturns runs r and returns Run's result, failing when Run keeps
// running past timeout (it must return by itself).
func runUntilReturns(t *testing.T, r *outbox.Relay, timeout time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		cancel()
		<-done
		t.Fatalf("Run did not return by itself within %s", timeout)
		return nil
	}
}

// A relay whose configuration needs a feature the server lacks returns the
// error from Run, at once, instead of retrying (or stopping) silently; it
// never becomes ready.
func TestRelayRunReturnsUnsupportedServer(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	for name, opts := range map[string][]outbox.Option{
		"message TTL on 2.10": {outbox.WithMessageTTL(time.Hour), outbox.WithServerVersion("2.10.7")},
		"required multi-filter on 2.9": {outbox.WithRequiredFeatures(natsevent.FeatureMultiFilter),
			outbox.WithServerVersion("2.9.10")},
		// The in-process server is current: a feature no server has.
		"required unknown feature": {outbox.WithRequiredFeatures(natsevent.Feature(1 << 20))},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r, err := outbox.NewRelay(memstore.New(), newDB(t), b.js, fastOpts(t, b, opts...)...)
			require.NoError(t, err)
			require.ErrorIs(t, r.Ready(), outbox.ErrNotStarted)
			err = runUntilReturns(t, r, 10*time.Second)
			require.ErrorIs(t, err, natsevent.ErrUnsupported)
			require.ErrorIs(t, r.Ready(), natsevent.ErrUnsupported, "Ready reports why Run ended")
			requireClosed(t, r.Started(), "Started")
			requireClosed(t, r.Done(), "Done")
			require.False(t, r.Stats().Leader, "a refused relay never leads")
		})
	}
}

// Run passes its start-up checks, is ready while it stands by or leads,
// and returns nil once its context ends; a relay runs once.
func TestRelayLifecycle(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	pool := newDB(t)
	leader, err := outbox.NewRelay(memstore.New(), pool, b.js, fastOpts(t, b)...)
	require.NoError(t, err)
	standby, err := outbox.NewRelay(memstore.New(), pool, b.js, fastOpts(t, b)...)
	require.NoError(t, err)
	require.ErrorIs(t, leader.Ready(), outbox.ErrNotStarted)

	stopLeader := runRelay(t, leader)
	requireClosed(t, leader.Started(), "Started")
	require.NoError(t, leader.Ready())
	eventually(t, 10*time.Second, "leadership", func() bool { return leader.Stats().Leader })
	stopStandby := runRelay(t, standby)
	requireClosed(t, standby.Started(), "Started")
	require.NoError(t, standby.Ready(), "a standby is ready")
	require.False(t, standby.Stats().Leader)

	stopLeader() // Run returned nil (runRelay checks it)
	requireClosed(t, leader.Done(), "Done")
	require.ErrorIs(t, leader.Ready(), outbox.ErrStopped)
	require.Error(t, leader.Run(context.Background()), "a relay runs once")
	// The leader released its lease when Run returned: the standby leads
	// at once.
	eventually(t, 5*time.Second, "the standby to lead", func() bool { return standby.Stats().Leader })
	stopStandby()
}

// A relay whose checkpoints cannot work (no table in the schema: the
// migrations did not run there) returns the error from Run instead of
// retrying forever.
func TestRelayRunReturnsMissingCheckpoints(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	pool := testsvc.Pool(t) // not migrated
	for name, schema := range map[string]string{"no table": "public", "no schema": "nosuch"} {
		t.Run(name, func(t *testing.T) {
			r, err := outbox.NewRelay(memstore.New(), pool, b.js,
				outbox.WithPrefix(b.prefix), outbox.WithSchema(schema), outbox.WithBackoffPolicy(backoff.Policy{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond}),
				outbox.WithLogger(slog.New(slog.NewTextHandler(testWriter{t}, nil))))
			require.NoError(t, err)
			err = runUntilReturns(t, r, 10*time.Second)
			var pe *pgconn.PgError
			require.ErrorAs(t, err, &pe)
			require.Contains(t, []string{pgerrcode.UndefinedTable, pgerrcode.InvalidSchemaName}, pe.Code)
			require.ErrorIs(t, r.Ready(), err)
		})
	}
}

// Given a *pgstore.Store, the relay keeps its checkpoint in the store's
// database and schema: no pool and no WithSchema needed.
func TestRelayTakesSchemaFromStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := newBroker(t)
	pool := testsvc.Pool(t)
	const schema = "relay_own"
	store, err := pgstore.New(ctx, pool, pgstore.WithSchema(schema), pgstore.WithAutoMigrate())
	require.NoError(t, err)
	t.Cleanup(store.Close)
	appendEvents(t, ctx, store, awkwardStreams, 20, "s")
	waitFeed(t, store, 20)

	r, err := outbox.NewRelay(store, nil, b.js, outbox.WithPrefix(b.prefix), outbox.WithName("own"),
		outbox.WithCheckInterval(50*time.Millisecond), outbox.WithLogger(slog.New(slog.NewTextHandler(testWriter{t}, nil))))
	require.NoError(t, err)
	runRelay(t, r)
	eventually(t, 20*time.Second, "relay to catch up", caughtUp(t, r, store))
	head, err := store.Head(ctx)
	require.NoError(t, err)
	eventually(t, 10*time.Second, "the checkpoint in the store's schema", func() bool {
		pos, err := outbox.ReadCheckpoint(ctx, pool, schema, "own")
		require.NoError(t, err)
		return pos == head
	})
	st, err := outbox.ReadStatus(ctx, pool, schema, "own")
	require.NoError(t, err)
	require.True(t, st.Leader, "the lease is the one of the store's schema")
	require.Equal(t, r.Stats().Lease.Token, st.Lease.Token)
}

func requireClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s not closed", what)
	}
}
