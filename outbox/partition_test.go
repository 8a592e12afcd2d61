package outbox_test

import (
	"log/slog"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/internal/netproxy"
	"github.com/eskit/eskit/outbox"
)

// The leading relay's link to PostgreSQL is cut (a partition: its
// connections stay open, nothing gets through) while a standby reaches
// everything: the standby takes over within the lease TTL and publishes
// what is appended meanwhile. The cut lasts several TTLs; once it heals,
// the deposed relay stands by (it publishes nothing more), and when the
// new leader stops it leads again: nothing of the cut stays behind (no
// lock held by a dead session, no hung worker). JetStream holds every
// record once, in feed order.
func TestRelayCutOffFromPostgresFailsOver(t *testing.T) {
	ctx := t.Context()
	dbURL := testsvc.Database(t)
	pool := testsvc.PoolFor(t, dbURL)
	require.NoError(t, pgstore.Migrate(ctx, pool, testSchema))
	store := newPgStore(t, pool)
	b := newBroker(t)
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))

	// Relay A reaches PostgreSQL through the proxy.
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	proxy := netproxy.Start(t, u.Host)
	u.Host = proxy.Addr()
	cutPool := testsvc.PoolFor(t, u.String())
	cutStore := newPgStore(t, cutPool)
	a, err := outbox.NewRelay(cutStore, cutPool, b.js, freezeOpts(b.prefix, log.With("relay", "A"))...)
	require.NoError(t, err)
	stopA := runRelay(t, a)
	eventually(t, 10*time.Second, "A to lead", func() bool { return a.Stats().Leader })
	appendEvents(t, ctx, store, awkwardStreams, 30, "before")
	eventually(t, 20*time.Second, "A to publish", caughtUp(t, a, store))

	standby, err := outbox.NewRelay(store, pool, b.js, freezeOpts(b.prefix, log.With("relay", "B"))...)
	require.NoError(t, err)
	stopB := runRelay(t, standby)
	time.Sleep(freezeTTL)
	require.False(t, standby.Stats().Leader, "the standby took over from a live leader")

	proxy.Freeze()
	t.Cleanup(proxy.Thaw) // before the relays stop
	cut := time.Now()
	appendEvents(t, ctx, store, awkwardStreams, 40, "cut")
	eventually(t, freezeTTL+5*time.Second, "the standby to take over", func() bool { return standby.Stats().Leader })
	after := time.Since(cut)
	t.Logf("the standby took over %s after the cut (ttl %s)", after, freezeTTL)
	require.Less(t, after, freezeTTL+1500*time.Millisecond, "takeover within the ttl (+1.5 s)")
	eventually(t, 20*time.Second, "the new leader to publish what was appended", caughtUp(t, standby, store))
	require.False(t, a.Stats().Leader, "the cut-off relay still believes it leads")

	// A long cut: several TTLs.
	time.Sleep(time.Until(cut.Add(5 * freezeTTL)))
	proxy.Thaw()
	appendEvents(t, ctx, store, awkwardStreams, 20, "healed")
	eventually(t, 20*time.Second, "the leader to go on", caughtUp(t, standby, store))
	require.True(t, standby.Stats().Leader)
	require.False(t, a.Stats().Leader, "the healed relay took over from a live leader")
	require.NoError(t, a.Ready(), "the healed relay is a ready standby")

	// The new leader stops: the healed relay leads again.
	stopB()
	eventually(t, freezeTTL+10*time.Second, "the healed relay to lead again", func() bool { return a.Stats().Leader })
	appendEvents(t, ctx, store, awkwardStreams, 10, "after")
	eventually(t, 20*time.Second, "the healed relay to publish", caughtUp(t, a, store))
	stopA()
	requireSameFeed(t, feedAll(t, store), b.records(t))
}
