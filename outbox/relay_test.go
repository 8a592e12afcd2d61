package outbox_test

import (
	"context"
	"encoding/base64"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/memstore"
	"github.com/eskit/eskit/natsevent"
	"github.com/eskit/eskit/outbox"
)

// awkwardStreams are stream IDs whose bytes would change routing if they
// were not escaped.
var awkwardStreams = []string{
	"account-42",
	"account-a.b",
	"order-*",
	"order->",
	"order-x.*.>",
	"with space-1",
	"nodash",
	"~tilde-~7e",
	"ünïcode-é",
	"-leading",
}

func TestRelayEndToEnd(t *testing.T) {
	t.Parallel()
	relayEndToEnd(t, newBroker(t), newDB(t), memstore.New())
}

func TestRelayEndToEndPgStore(t *testing.T) {
	t.Parallel()
	pool := newDB(t)
	relayEndToEnd(t, newBroker(t), pool, newPgStore(t, pool))
}

func TestRelayEndToEndExternal(t *testing.T) {
	t.Parallel()
	pool := newDB(t)
	relayEndToEnd(t, externalBroker(t), pool, newPgStore(t, pool))
}

func relayEndToEnd(t *testing.T, b *broker, pool *pgxpool.Pool, store eventstore.Store) {
	ctx := context.Background()
	appendEvents(t, ctx, store, awkwardStreams, 250, "a")
	waitFeed(t, store, 250)

	r, err := outbox.NewRelay(store, pool, b.js, fastOpts(t, b, outbox.WithBatchSize(64), outbox.WithMaxInFlight(16))...)
	require.NoError(t, err)
	runRelay(t, r)
	eventually(t, 20*time.Second, "relay to catch up", caughtUp(t, r, store))

	// Live events after catching up arrive too.
	appendEvents(t, ctx, store, awkwardStreams, 50, "b")
	waitFeed(t, store, 300)
	eventually(t, 20*time.Second, "relay to catch up again", caughtUp(t, r, store))

	feed := feedAll(t, store)
	got := b.records(t)
	requireSameFeed(t, feed, got)

	// Every message is routed by its escaped stream ID and type.
	for _, sid := range awkwardStreams {
		s, err := b.js.Stream(ctx, b.stream)
		require.NoError(t, err)
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(natsevent.StreamFilter(b.prefix, sid)))
		require.NoError(t, err)
		var n uint64
		for _, c := range info.State.Subjects {
			n += c
		}
		require.Equal(t, uint64(30), n, "messages routed to stream %q", sid)
	}

	st := r.Stats()
	require.True(t, st.Leader)
	require.Equal(t, uint64(300), st.Published)
	require.Equal(t, feed[len(feed)-1].Position, st.Position)
	require.Zero(t, st.LagEvents)
	require.Zero(t, st.Lag)

	cp, err := outbox.ReadCheckpoint(ctx, pool, testSchema, outbox.DefaultName)
	require.NoError(t, err)
	require.Equal(t, st.Position, cp)
}

func TestRelayHeaders(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := newBroker(t)
	pool := newDB(t)
	store := memstore.New()
	id := eventstore.NewEventID()
	_, err := store.Append(ctx, "account-7", eventstore.NoStream, eventstore.Event{
		ID: id, Type: "Opened", Data: []byte(`{}`),
		Metadata: eventstore.Metadata{
			eventstore.MetaCorrelationID: "c1", eventstore.MetaCausationID: "k1",
			eventstore.MetaContentType: "application/json", "tenant": "t9",
			eventstore.MetaSchemaVersion: "2\r\n",
		},
	})
	require.NoError(t, err)
	r, err := outbox.NewRelay(store, pool, b.js, fastOpts(t, b)...)
	require.NoError(t, err)
	runRelay(t, r)
	eventually(t, 20*time.Second, "relay to catch up", caughtUp(t, r, store))

	s, err := b.js.Stream(ctx, b.stream)
	require.NoError(t, err)
	m, err := s.GetMsg(ctx, 1)
	require.NoError(t, err)
	require.Equal(t, b.prefix+".bc.account.account-7.Opened", m.Subject) // account-7 is in bucket bc
	rec, err := store.ReadEvent(ctx, id)
	require.NoError(t, err)
	require.Equal(t, id.String(), m.Header.Get(natsevent.HeaderMsgID))
	require.Equal(t, "1", m.Header.Get(natsevent.HeaderVersion))
	require.Equal(t, rec.Position.String(), m.Header.Get(natsevent.HeaderPosition))
	md, err := base64.RawStdEncoding.DecodeString(m.Header.Get(natsevent.HeaderMetadata))
	require.NoError(t, err)
	require.JSONEq(t, `{"correlation_id":"c1","causation_id":"k1","content_type":"application/json","tenant":"t9","schema_version":"2\r\n"}`, string(md))
	got, err := natsevent.DecodeMsg(m.Subject, m.Header, m.Data)
	require.NoError(t, err)
	require.Equal(t, rec.Metadata, got.Metadata)
}

func TestRelayResumesFromCheckpoint(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := newBroker(t)
	pool := newDB(t)
	store := memstore.New()
	streams := []string{"acct-1", "acct-2", "acct-3"}
	appendEvents(t, ctx, store, streams, 200, "first")

	r1, err := outbox.NewRelay(store, pool, b.js, fastOpts(t, b, outbox.WithBatchSize(50))...)
	require.NoError(t, err)
	stop := runRelay(t, r1)
	eventually(t, 20*time.Second, "first relay to catch up", caughtUp(t, r1, store))
	stop()
	cp, err := outbox.ReadCheckpoint(ctx, pool, testSchema, outbox.DefaultName)
	require.NoError(t, err)
	require.Equal(t, r1.Stats().Position, cp)

	appendEvents(t, ctx, store, streams, 200, "second")
	r2, err := outbox.NewRelay(store, pool, b.js, fastOpts(t, b, outbox.WithBatchSize(50))...)
	require.NoError(t, err)
	runRelay(t, r2)
	eventually(t, 20*time.Second, "second relay to catch up", caughtUp(t, r2, store))
	// The second relay started from the checkpoint: it published only the
	// new records.
	require.Equal(t, uint64(200), r2.Stats().Published)
	requireSameFeed(t, feedAll(t, store), b.records(t))
}

// deposeLeader expires the relay's lease in the lease table, as if the
// leader had stopped renewing it (a freeze, a partition), and returns the
// token it had. The leader learns it at its next renewal or guarded write.
func deposeLeader(t *testing.T, pool *pgxpool.Pool) uint64 {
	t.Helper()
	ctx := context.Background()
	var token uint64
	eventually(t, 10*time.Second, "a lease holder", func() bool {
		st, err := outbox.ReadStatus(ctx, pool, testSchema, outbox.DefaultName)
		require.NoError(t, err)
		token = st.Lease.Token
		return st.Leader
	})
	ok, err := outbox.ExpireLease(ctx, pool, testSchema, outbox.DefaultName)
	require.NoError(t, err)
	require.True(t, ok)
	return token
}

// appender appends in the background until stopped.
type appender struct {
	stopping atomic.Bool
	done     chan struct{}
	count    atomic.Int64
}

func startAppender(t *testing.T, store eventstore.Appender, streams []string) *appender {
	t.Helper()
	a := &appender{done: make(chan struct{})}
	go func() {
		defer close(a.done)
		for i := 0; !a.stopping.Load(); i++ {
			// Appends are never cancelled half-way, so that count is exact.
			_, err := store.Append(context.Background(), streams[i%len(streams)], eventstore.Any, eventstore.Event{
				ID: eventstore.NewEventID(), Type: "Tick", Data: []byte(`{}`),
			})
			if err != nil {
				t.Errorf("append: %v", err)
				return
			}
			a.count.Add(1)
			if i%20 == 0 {
				time.Sleep(time.Millisecond) // a steady stream, not a flood
			}
		}
	}()
	return a
}

func (a *appender) finish() {
	a.stopping.Store(true)
	<-a.done
}

// waitAppended waits until the appender has appended n more events.
func (a *appender) waitAppended(t *testing.T, n int64) {
	t.Helper()
	target := a.count.Load() + n
	eventually(t, 20*time.Second, "appends", func() bool { return a.count.Load() >= target })
}

// requireDeliveredOnce checks the stream after failures: every feed record
// arrived, the first occurrences are in feed order, and JetStream's
// de-duplication left each event ID exactly once.
func requireDeliveredOnce(t *testing.T, feed, got []eventstore.Record) {
	t.Helper()
	firsts := dedup(got)
	requireSameFeed(t, feed, firsts)
	require.Equal(t, len(firsts), len(got), "duplicates within the duplicate window must be dropped by JetStream")
}

func TestRelayFailoverMidBatch(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ how, store string }{
		{"lease", "mem"}, {"context", "mem"}, {"lease", "pg"}, {"context", "pg"},
	} {
		how := c.how
		t.Run(c.how+"/"+c.store, func(t *testing.T) {
			t.Parallel()
			b := newBroker(t)
			pool := newDB(t)
			var store eventstore.Store = memstore.New()
			if c.store == "pg" {
				store = newPgStore(t, pool)
			}
			streams := []string{"acct-1", "acct-2", "acct-3", "acct-4"}
			ap := startAppender(t, store, streams)
			defer ap.finish()

			a, err := outbox.NewRelay(store, pool, b.js, fastOpts(t, b, outbox.WithBatchSize(37), outbox.WithMaxInFlight(8))...)
			require.NoError(t, err)
			stopA := runRelay(t, a)
			eventually(t, 10*time.Second, "relay A to lead and publish", func() bool { return a.Stats().Published > 100 })

			bRelay, err := outbox.NewRelay(store, pool, b.js, fastOpts(t, b, outbox.WithBatchSize(37), outbox.WithMaxInFlight(8))...)
			require.NoError(t, err)
			runRelay(t, bRelay)
			ap.waitAppended(t, 200)
			require.False(t, bRelay.Stats().Leader)

			switch how {
			case "lease":
				deposeLeader(t, pool)
			case "context":
				stopA()
			}
			eventually(t, 10*time.Second, "a leader to publish again", func() bool {
				return (bRelay.Stats().Leader && bRelay.Stats().Published > 0) || a.Stats().Published > 0 && a.Stats().Leader
			})
			ap.waitAppended(t, 200)
			ap.finish()
			waitFeed(t, store, int(ap.count.Load()))
			eventually(t, 20*time.Second, "the leader to catch up", func() bool {
				return caughtUp(t, a, store)() || caughtUp(t, bRelay, store)()
			})
			requireDeliveredOnce(t, feedAll(t, store), b.records(t))
		})
	}
}

func TestTwoRelaysOneLeader(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := newBroker(t)
	pool := newDB(t)
	store := memstore.New()
	appendEvents(t, ctx, store, []string{"acct-1"}, 10, "x")

	relays := make([]*outbox.Relay, 2)
	for i := range relays {
		r, err := outbox.NewRelay(store, pool, b.js, fastOpts(t, b)...)
		require.NoError(t, err)
		relays[i] = r
		runRelay(t, r)
	}
	leaders := func() (n int, leader int) {
		for i, r := range relays {
			if r.Stats().Leader {
				n++
				leader = i
			}
		}
		return n, leader
	}
	eventually(t, 10*time.Second, "a leader", func() bool { n, _ := leaders(); return n == 1 })
	eventually(t, 10*time.Second, "catch-up", func() bool {
		_, l := leaders()
		return caughtUp(t, relays[l], store)()
	})
	_, first := leaders()
	standby := relays[1-first]
	// Standbys keep trying, and never lead while the leader lives.
	require.False(t, standby.Stats().Leader)

	deposed := deposeLeader(t, pool)
	start := time.Now()
	// Either relay may take the lease next: the standby, or the deposed
	// leader after it noticed and stood by. Leadership must come back
	// within seconds, with a newer token. The deposed relay notices its
	// loss at its next renewal or checkpoint write, so for a moment both
	// may call themselves leader; only the new token's holder can advance
	// the checkpoint.
	eventually(t, 10*time.Second, "a new lease", func() bool {
		st, err := outbox.ReadStatus(ctx, pool, testSchema, outbox.DefaultName)
		require.NoError(t, err)
		return st.Leader && st.Lease.Token > deposed
	})
	t.Logf("leadership restored after %s", time.Since(start))

	appendEvents(t, ctx, store, []string{"acct-1"}, 10, "y")
	eventually(t, 20*time.Second, "one leader, caught up", func() bool {
		n, l := leaders()
		return n == 1 && caughtUp(t, relays[l], store)()
	})
	requireDeliveredOnce(t, feedAll(t, store), b.records(t))
}

func TestRelaySurvivesJetStreamRestart(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	pool := newDB(t)
	store := memstore.New()
	ap := startAppender(t, store, []string{"acct-1", "acct-2", "acct-3"})
	defer ap.finish()

	r, err := outbox.NewRelay(store, pool, b.js, fastOpts(t, b, outbox.WithBatchSize(50), outbox.WithAckTimeout(500*time.Millisecond))...)
	require.NoError(t, err)
	runRelay(t, r)
	eventually(t, 10*time.Second, "relay to publish", func() bool { return r.Stats().Published > 100 })

	for range 2 {
		b.srv.Stop()
		ap.waitAppended(t, 100)
		eventually(t, 10*time.Second, "the relay to notice the outage", func() bool { return r.Stats().LastError != nil })
		require.NoError(t, b.srv.Restart())
		published := r.Stats().Published
		eventually(t, 20*time.Second, "publishing to resume", func() bool { return r.Stats().Published > published+50 })
	}
	ap.finish()
	waitFeed(t, store, int(ap.count.Load()))
	eventually(t, 20*time.Second, "the relay to catch up", caughtUp(t, r, store))
	requireDeliveredOnce(t, feedAll(t, store), b.records(t))
}

func TestRelaySurvivesPostgresConnectionLoss(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	pool := newDB(t)
	store := memstore.New()
	ap := startAppender(t, store, []string{"acct-1", "acct-2"})
	defer ap.finish()

	r, err := outbox.NewRelay(store, pool, b.js, fastOpts(t, b, outbox.WithBatchSize(20))...)
	require.NoError(t, err)
	runRelay(t, r)
	eventually(t, 10*time.Second, "relay to publish", func() bool { return r.Stats().Published > 50 })

	// Every connection to the database dies, the pool's included.
	var db string
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT current_database()`).Scan(&db))
	admin, err := pgxpool.New(context.Background(), pool.Config().ConnString())
	require.NoError(t, err)
	defer admin.Close()
	_, err = admin.Exec(context.Background(),
		`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, db)
	require.NoError(t, err)

	eventually(t, 10*time.Second, "the relay to notice", func() bool { return r.Stats().LastError != nil })
	ap.waitAppended(t, 100)
	ap.finish()
	waitFeed(t, store, int(ap.count.Load()))
	eventually(t, 20*time.Second, "the relay to catch up", caughtUp(t, r, store))
	require.True(t, r.Stats().Leader)
	requireDeliveredOnce(t, feedAll(t, store), b.records(t))
}

func TestRelayRunTwiceFails(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	r, err := outbox.NewRelay(memstore.New(), newDB(t), b.js, fastOpts(t, b)...)
	require.NoError(t, err)
	runRelay(t, r)
	eventually(t, 10*time.Second, "leadership", func() bool { return r.Stats().Leader })
	require.Error(t, r.Run(context.Background()))
}

func TestNewRelayValidates(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	pool := newDB(t)
	store := memstore.New()
	for name, opt := range map[string]outbox.Option{
		"prefix with dot":  outbox.WithPrefix("a.b"),
		"prefix wildcard":  outbox.WithPrefix("*"),
		"zero batch":       outbox.WithBatchSize(0),
		"zero in flight":   outbox.WithMaxInFlight(0),
		"empty name":       outbox.WithName(""),
		"bad backoff":      outbox.WithBackoffPolicy(backoff.Policy{Initial: time.Second, Max: time.Millisecond}),
		"sub-second ttl":   outbox.WithMessageTTL(time.Millisecond),
		"zero ack timeout": outbox.WithAckTimeout(0),
		"zero checkpoint":  outbox.WithCheckpointInterval(0),
	} {
		_, err := outbox.NewRelay(store, pool, b.js, opt)
		require.Error(t, err, name)
	}
}

// pollingFeed hides the store's Subscribe, so the relay polls.
type pollingFeed struct{ eventstore.FeedReader }

func TestRelayPollsPlainFeed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := newBroker(t)
	store := memstore.New()
	r, err := outbox.NewRelay(pollingFeed{store}, newDB(t), b.js, fastOpts(t, b)...)
	require.NoError(t, err)
	runRelay(t, r)
	eventually(t, 10*time.Second, "leadership", func() bool { return r.Stats().Leader })
	var wg sync.WaitGroup
	wg.Go(func() { appendEvents(t, ctx, store, []string{"acct-1", "acct-2"}, 100, "p") })
	wg.Wait()
	eventually(t, 10*time.Second, "the relay to catch up", caughtUp(t, r, store))
	requireSameFeed(t, feedAll(t, store), b.records(t))
}

// With a checkpoint interval longer than the test, fewer acknowledged
// records than a batch are checkpointed only when the relay stops; a
// successor resumes from there.
func TestRelayCheckpointsOnStop(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := newBroker(t)
	pool := newDB(t)
	store := memstore.New()
	opts := fastOpts(t, b, outbox.WithBatchSize(1000), outbox.WithCheckpointInterval(time.Hour))
	r1, err := outbox.NewRelay(store, pool, b.js, opts...)
	require.NoError(t, err)
	stop := runRelay(t, r1)
	eventually(t, 10*time.Second, "leadership", func() bool { return r1.Stats().Leader })
	appendEvents(t, ctx, store, []string{"acct-1", "acct-2"}, 50, "first")
	eventually(t, 20*time.Second, "50 messages in the stream", func() bool { return len(b.records(t)) == 50 })
	stop()
	feed := feedAll(t, store)
	cp, err := outbox.ReadCheckpoint(ctx, pool, testSchema, outbox.DefaultName)
	require.NoError(t, err)
	require.Equal(t, feed[len(feed)-1].Position, cp, "the checkpoint written on stop")
	require.Equal(t, cp, r1.Stats().Position)
	require.Equal(t, uint64(50), r1.Stats().Published)

	appendEvents(t, ctx, store, []string{"acct-1", "acct-2"}, 30, "second")
	r2, err := outbox.NewRelay(store, pool, b.js, opts...)
	require.NoError(t, err)
	runRelay(t, r2)
	eventually(t, 20*time.Second, "80 messages in the stream", func() bool { return len(b.records(t)) == 80 })
	requireSameFeed(t, feedAll(t, store), b.records(t))
}

// A caller's waiter replaces the feed's own subscription.
func TestRelayWithWaiter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := newBroker(t)
	store := memstore.New()
	var waits atomic.Int64
	wait := func(ctx context.Context, _ eventstore.Position) error {
		waits.Add(1)
		return sleepFor(ctx, 2*time.Millisecond)
	}
	r, err := outbox.NewRelay(store, newDB(t), b.js, fastOpts(t, b, outbox.WithWaiter(wait))...)
	require.NoError(t, err)
	runRelay(t, r)
	appendEvents(t, ctx, store, []string{"acct-1", "acct-2"}, 40, "w")
	eventually(t, 10*time.Second, "the relay to catch up", caughtUp(t, r, store))
	appendEvents(t, ctx, store, []string{"acct-3"}, 10, "w2")
	eventually(t, 10*time.Second, "the relay to catch up again", caughtUp(t, r, store))
	requireSameFeed(t, feedAll(t, store), b.records(t))
	require.Positive(t, waits.Load(), "the relay waited with the given waiter")
}

func sleepFor(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
