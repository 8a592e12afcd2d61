package projection_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/internal/infra/natstest"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/natsevent"
	"github.com/eskit/eskit/outbox"
	"github.com/eskit/eskit/projection"
)

func requireClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s not closed", what)
	}
}

// Run passes its start-up checks, is ready while it runs, returns nil once
// its context ends (its leases released, so another runner takes over at
// once), and runs once. The runner's errors and the relay's are the same
// values.
func TestRunnerLifecycle(t *testing.T) {
	t.Parallel()
	rdb, prefix := testsvc.Redis(t)
	store := newMemstore()
	reg := newRegistry(t)
	appendEvents(t, store, reg, streamNames(3), 10)
	first, err := projection.NewRunner(rdb, store, []projection.Projection{newAccounts(t, "accounts")}, fastOpts(t, prefix)...)
	require.NoError(t, err)
	second, err := projection.NewRunner(rdb, store, []projection.Projection{newAccounts(t, "accounts")}, fastOpts(t, prefix)...)
	require.NoError(t, err)
	require.ErrorIs(t, first.Ready(), projection.ErrNotStarted)
	require.Equal(t, outbox.ErrNotStarted, projection.ErrNotStarted, "one life cycle")
	require.Equal(t, outbox.ErrStopped, projection.ErrStopped, "one life cycle")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- first.Run(ctx) }()
	requireClosed(t, first.Started(), "Started")
	require.NoError(t, first.Ready())
	waitHead(t, first, "accounts", store)
	eventually(t, 10*time.Second, "the partition", func() bool { return first.Active("accounts") })
	start(t, second)
	requireClosed(t, second.Started(), "Started")
	require.NoError(t, second.Ready(), "a runner holding no partition is ready")

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err, "Run returns nil once its context ends")
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
	}
	requireClosed(t, first.Done(), "Done")
	require.ErrorIs(t, first.Ready(), projection.ErrStopped)
	require.Error(t, first.Run(context.Background()), "a runner runs once")
	// The leases were released: the other runner takes the partition long
	// before the lease (1 s) would expire.
	eventually(t, 900*time.Millisecond, "the other runner to take over", func() bool { return second.Active("accounts") })
}

// A runner that cannot start returns the error from Run at once: here its
// NATS connection is closed, so it cannot even learn the server's version.
func TestRunnerRunReturnsStartupError(t *testing.T) {
	t.Parallel()
	rdb, prefix := testsvc.Redis(t)
	js := natstest.JetStream(t, natstest.Start(t).URL())
	js.Conn().Close()
	r, err := projection.NewRunner(rdb, newMemstore(), []projection.Projection{newAccounts(t, "accounts")},
		fastOpts(t, prefix, projection.WithJetStream(js, natsevent.StreamName("bank")))...)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	select {
	case err := <-done:
		require.Error(t, err)
		require.ErrorIs(t, r.Ready(), err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run kept running")
	}
	requireClosed(t, r.Started(), "Started")
}

// A projection's stored configuration that does not match is a start-up
// error too: Run returns the *ConfigError.
func TestRunnerRunReturnsConfigError(t *testing.T) {
	t.Parallel()
	rdb, prefix := testsvc.Redis(t)
	store := newMemstore()
	one, err := projection.NewRunner(rdb, store, []projection.Projection{projection.New("split", nil)}, fastOpts(t, prefix)...)
	require.NoError(t, err)
	rn := start(t, one)
	requireClosed(t, one.Started(), "Started") // registered
	rn.stop()
	four, err := projection.NewRunner(rdb, store, []projection.Projection{projection.New("split", nil, projection.Partitions(4))},
		fastOpts(t, prefix)...)
	require.NoError(t, err)
	err = four.Run(context.Background())
	var ce *projection.ConfigError
	require.ErrorAs(t, err, &ce)
	require.ErrorIs(t, four.Ready(), err)
}

// One prefix convention: the deployment's word, with the separator added
// when it has none, so "bank" and "bank:" name the same keys everywhere.
func TestKeyPrefix(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"bank": "bank:", "bank:": "bank:", "": "", "v2": "v2:", "app/": "app/", "app_": "app_", "émoji": "émoji:",
	} {
		require.Equal(t, want, projection.KeyPrefix(in), in)
	}

	rdb, prefix := testsvc.Redis(t)
	word := prefix[:len(prefix)-1] // testsvc's prefixes end with ':'
	store := newMemstore()
	reg := newRegistry(t)
	appendEvents(t, store, reg, streamNames(2), 4)
	r, err := projection.NewRunner(rdb, store, []projection.Projection{newAccounts(t, "accounts")}, fastOpts(t, word)...)
	require.NoError(t, err)
	start(t, r)
	waitHead(t, r, "accounts", store)
	for _, p := range []string{word, prefix} {
		names, err := projection.NewReader(rdb, p, store).Projections(context.Background())
		require.NoError(t, err)
		require.Equal(t, []string{"accounts"}, names, "reader with prefix %q", p)
	}
	ns, err := r.Namespace(context.Background(), "accounts")
	require.NoError(t, err)
	require.Equal(t, prefix, ns.Prefix)
}
