package outbox_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/internal/infra/natstest"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/natsevent"
	"github.com/eskit/eskit/outbox"
)

// testLeaseTTL is the relays' lease TTL in tests.
const testLeaseTTL = 2 * time.Second

// testSchema is the schema tests keep checkpoints in.
const testSchema = "eskit"

// newDB returns a pool on a fresh, migrated database (the event store's
// migrations create the checkpoints table).
func newDB(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool := testsvc.Pool(t)
	require.NoError(t, pgstore.Migrate(context.Background(), pool, testSchema))
	return pool
}

// newPgStore returns a PostgreSQL event store on pool, closed when t ends.
func newPgStore(t testing.TB, pool *pgxpool.Pool) *pgstore.Store {
	t.Helper()
	s, err := pgstore.New(context.Background(), pool, pgstore.WithSchema(testSchema))
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s
}

// broker is a JetStream server (in-process unless external) and a stream
// with a test-unique prefix on it.
type broker struct {
	srv    *natstest.Server // nil for an external server
	url    string
	js     jetstream.JetStream
	prefix string
	stream string
}

// newBroker starts an in-process server and provisions a stream on it.
func newBroker(t testing.TB) *broker {
	t.Helper()
	srv := natstest.Start(t)
	return provision(t, srv, srv.URL())
}

// externalBroker provisions a stream on ESKIT_NATS_URL, or skips the test
// when it is not set; the stream is deleted when t ends.
func externalBroker(t testing.TB) *broker {
	t.Helper()
	url, ok := natstest.ExternalURL()
	if !ok {
		t.Skipf("%s is not set", natstest.EnvURL)
	}
	return provision(t, nil, url)
}

func provision(t testing.TB, srv *natstest.Server, url string) *broker {
	t.Helper()
	b := &broker{srv: srv, url: url, js: natstest.JetStream(t, url)}
	b.prefix = strings.ReplaceAll(testsvc.Name("ev"), "_", "")
	b.stream = strings.ToUpper(b.prefix)
	ctx := context.Background()
	_, err := outbox.EnsureStream(ctx, b.js, outbox.StreamConfig{Prefix: b.prefix, Name: b.stream})
	require.NoError(t, err)
	if srv == nil {
		t.Cleanup(func() { _ = b.js.DeleteStream(context.Background(), b.stream) })
	}
	return b
}

// records reads every message of the stream, in stream order, decoded.
func (b *broker) records(t testing.TB) []eventstore.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := b.js.Stream(ctx, b.stream)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	total := int(info.State.Msgs)
	if total == 0 {
		return nil
	}
	c, err := b.js.OrderedConsumer(ctx, b.stream, jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	out := make([]eventstore.Record, 0, total)
	for len(out) < total {
		batch, err := c.Fetch(min(total-len(out), 1000), jetstream.FetchMaxWait(2*time.Second))
		require.NoError(t, err)
		for m := range batch.Messages() {
			rec, err := natsevent.DecodeMsg(m.Subject(), m.Headers(), m.Data())
			require.NoError(t, err)
			out = append(out, rec)
		}
		require.NoError(t, batch.Error())
		require.NoError(t, ctx.Err())
	}
	return out
}

// eventually waits (up to timeout) until cond holds.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runRelay runs r in the background; the returned stop cancels it and
// waits for Run to return (nil: its context ended).
func runRelay(t testing.TB, r *outbox.Relay) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(30 * time.Second):
				t.Error("relay did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// appendEvents appends n events spread over streams, one event per append,
// with correlation and causation metadata.
func appendEvents(t testing.TB, ctx context.Context, store eventstore.Appender, streams []string, n int, tag string) {
	t.Helper()
	for i := range n {
		sid := streams[i%len(streams)]
		_, err := store.Append(ctx, sid, eventstore.Any, eventstore.Event{
			ID:   eventstore.NewEventID(),
			Type: "Deposited",
			Data: []byte(fmt.Sprintf(`{"n":%d,"tag":%q}`, i, tag)),
			Metadata: eventstore.Metadata{
				eventstore.MetaCorrelationID: "corr-" + tag,
				eventstore.MetaCausationID:   fmt.Sprintf("cause-%d", i),
				eventstore.MetaContentType:   "application/json",
			},
		})
		require.NoError(t, err)
	}
}

// feedAll reads the whole feed.
func feedAll(t testing.TB, feed eventstore.FeedReader) []eventstore.Record {
	t.Helper()
	var out []eventstore.Record
	var pos eventstore.Position
	for {
		recs, err := feed.ReadAll(context.Background(), pos, 1000)
		require.NoError(t, err)
		if len(recs) == 0 {
			return out
		}
		out = append(out, recs...)
		pos = recs[len(recs)-1].Position
	}
}

// waitFeed waits until the feed shows n records (a PostgreSQL feed holds
// committed records back while older transactions are still running).
func waitFeed(t testing.TB, feed eventstore.FeedReader, n int) {
	t.Helper()
	eventually(t, 20*time.Second, fmt.Sprintf("%d records on the feed", n), func() bool {
		return len(feedAll(t, feed)) >= n
	})
	require.Equal(t, n, len(feedAll(t, feed)), "records on the feed")
}

// caughtUp reports whether the relay's checkpoint reached the feed's head.
func caughtUp(t testing.TB, r *outbox.Relay, feed eventstore.FeedReader) func() bool {
	return func() bool {
		return !r.Stats().Position.Before(testsvc.SettledHead(t, feed))
	}
}

// testWriter writes log lines to the test's log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// dedup keeps the first message of every event ID, in stream order.
func dedup(recs []eventstore.Record) []eventstore.Record {
	seen := make(map[string]bool, len(recs))
	var out []eventstore.Record
	for _, r := range recs {
		if !seen[r.ID.String()] {
			seen[r.ID.String()] = true
			out = append(out, r)
		}
	}
	return out
}

// requireSameFeed checks that got (the stream's messages, decoded) carries
// exactly the feed's records in feed order, with every field relayed.
func requireSameFeed(t testing.TB, feed, got []eventstore.Record) {
	t.Helper()
	require.Equal(t, len(feed), len(got), "number of records")
	for i := range feed {
		w, g := feed[i], got[i]
		require.Equal(t, w.ID, g.ID, "record %d", i)
		require.Equal(t, w.StreamID, g.StreamID, "record %d", i)
		require.Equal(t, w.Type, g.Type, "record %d", i)
		require.Equal(t, w.Version, g.Version, "record %d", i)
		require.Equal(t, w.Position, g.Position, "record %d", i)
		require.Equal(t, string(w.Data), string(g.Data), "record %d", i)
		require.True(t, w.RecordedAt.Equal(g.RecordedAt), "record %d", i)
		require.Equal(t, w.Metadata, g.Metadata, "record %d", i)
	}
	require.True(t, slices.IsSortedFunc(got, func(a, b eventstore.Record) int { return a.Position.Compare(b.Position) }))
}

// fastOpts are relay options that keep failover and retries quick in tests.
func fastOpts(t testing.TB, b *broker, extra ...outbox.Option) []outbox.Option {
	return append([]outbox.Option{
		outbox.WithLogger(slog.New(slog.NewTextHandler(testWriter{t}, nil))),
		outbox.WithPrefix(b.prefix),
		outbox.WithSchema(testSchema),
		outbox.WithBackoffPolicy(backoff.Policy{Initial: 10 * time.Millisecond, Max: 200 * time.Millisecond}),
		outbox.WithStandbyInterval(50 * time.Millisecond),
		outbox.WithCheckInterval(100 * time.Millisecond),
		outbox.WithAckTimeout(2 * time.Second),
		outbox.WithLeaseTTL(testLeaseTTL),
	}, extra...)
}
