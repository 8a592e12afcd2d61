package aggregate_test

import (
	"context"
	"errors"
	"iter"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/aggregate/internal/account"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/eventstore/pgstore/pgtest"
	"github.com/eskit/eskit/internal/require"
	"github.com/eskit/eskit/snapshot"
	"github.com/eskit/eskit/telemetry"
)

// history opens acc-1 and makes deposits of 1..n, returning the state
// after each version (states[v] is the state at version v).
func history(t *testing.T, r *repo, n int) []account.State {
	t.Helper()
	states := []account.State{{}}
	apply := func(res aggregate.Result[account.State, account.Event]) {
		for _, e := range res.Events {
			states = append(states, account.Decider{}.Evolve(states[len(states)-1], e))
		}
		require.EqualValues(t, len(states)-1, res.Version)
		require.Equal(t, res.State, states[res.Version])
	}
	apply(must(t, r, "acc-1", account.Open{Owner: "ann"}))
	for i := 1; i <= n; i++ {
		// The deposit that makes the account VIP causes two events.
		apply(must(t, r, "acc-1", account.Deposit{Amount: int64(i)}))
	}
	return states
}

// LoadAt a version gives the state a replay of the stream's first events
// gives, with or without snapshots (newer or older than the version).
func TestLoadAtVersion(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		plain := newRepo(t, e.store)
		states := history(t, plain, 60) // VIP at a balance of 1,000: two events once
		head := int64(len(states) - 1)
		for _, r := range []*repo{
			plain,
			newRepo(t, e.store, aggregate.WithSnapshots(e.snaps, snapshot.EveryN(7))),
			newRepo(t, e.store, aggregate.WithSnapshots(e.snaps, snapshot.EveryN(7)), aggregate.WithStateCache(10)),
		} {
			// A command through the repository takes a snapshot at
			// the head.
			must(t, r, "acc-1", account.Open{Owner: "ann"}) // no events: accepted as it is
			st, v, err := r.Load(t.Context(), "acc-1")
			require.NoError(t, err)
			require.Equal(t, states[head], st)
			require.Equal(t, head, v)
			for _, at := range []int64{1, 2, 13, 14, head - 1, head} {
				st, v, err := r.LoadAt(t.Context(), "acc-1", aggregate.AtVersion(at))
				require.NoError(t, err)
				require.Equal(t, states[at], st, "at version %d", at)
				require.Equal(t, at, v)
			}
			st, v, err = r.LoadAt(t.Context(), "acc-1", aggregate.AtVersion(head+10))
			require.NoError(t, err)
			require.Equal(t, states[head], st)
			require.Equal(t, head, v, "a stream shorter than the version asked for")
			st, v, err = r.LoadAt(t.Context(), "acc-1", aggregate.AtVersion(0))
			require.NoError(t, err)
			require.Equal(t, account.State{}, st)
			require.Zero(t, v)
			st, v, err = r.LoadAt(t.Context(), "acc-1", aggregate.At{})
			require.NoError(t, err)
			require.Equal(t, states[head], st, "the zero At is now")
			require.Equal(t, head, v)
			_, _, err = r.LoadAt(t.Context(), "acc-1", aggregate.AtVersion(-1))
			require.ErrorIs(t, err, eventstore.ErrInvalidArgument)
			st, v, err = r.LoadAt(t.Context(), "nobody", aggregate.AtVersion(3))
			require.NoError(t, err)
			require.Equal(t, account.State{}, st)
			require.Zero(t, v)
			// A past state does not stick: commands still decide on
			// the current one.
			res := must(t, r, "acc-1", account.Withdraw{Amount: 1})
			head = res.Version
			states = append(states, res.State)
		}
	})
}

// LoadAt a time folds the events recorded until then.
func TestLoadAtTime(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		r := newRepo(t, e.store, aggregate.WithSnapshots(e.snaps, snapshot.EveryN(1)))
		before := time.Now()
		time.Sleep(20 * time.Millisecond)
		must(t, r, "acc-1", account.Open{Owner: "ann"})
		must(t, r, "acc-1", account.Deposit{Amount: 10})
		time.Sleep(20 * time.Millisecond)
		between := time.Now()
		time.Sleep(20 * time.Millisecond)
		must(t, r, "acc-1", account.Deposit{Amount: 5})
		require.NoError(t, r.Flush(t.Context()))

		st, v, err := r.LoadAt(t.Context(), "acc-1", aggregate.AtTime(between))
		require.NoError(t, err)
		require.Equal(t, account.State{Open: true, Owner: "ann", Balance: 10}, st)
		require.EqualValues(t, 2, v)
		st, v, err = r.LoadAt(t.Context(), "acc-1", aggregate.AtTime(before))
		require.NoError(t, err)
		require.Equal(t, account.State{}, st)
		require.Zero(t, v)
		st, v, err = r.LoadAt(t.Context(), "acc-1", aggregate.AtTime(time.Now()))
		require.NoError(t, err)
		require.Equal(t, account.State{Open: true, Owner: "ann", Balance: 15}, st)
		require.EqualValues(t, 3, v)
	})
}

// readCounter wraps a pgstore Store (keeping its LoadWithSnapshot) and
// counts ReadStream calls.
type readCounter struct {
	*pgstore.Store
	mu    sync.Mutex
	reads int
}

func (c *readCounter) ReadStream(ctx context.Context, stream string, from int64) iter.Seq2[eventstore.Record, error] {
	c.mu.Lock()
	c.reads++
	c.mu.Unlock()
	return c.Store.ReadStream(ctx, stream, from)
}

// With pgstore and its own snapshot store, a load is one query
// (LoadWithSnapshot, no ReadStream); with another snapshot store it falls
// back to loading the snapshot, then reading the stream, with the same
// results.
func TestLoadInOneQueryOrTwo(t *testing.T) {
	ctx := t.Context()
	pool := pgtest.Pool(t)
	st, err := pgstore.New(ctx, pool, pgstore.WithAutoMigrate())
	require.NoError(t, err)
	t.Cleanup(st.Close)
	store := &readCounter{Store: st}
	for _, tc := range []struct {
		name  string
		snaps snapshot.Store
		reads bool
	}{
		{"own snapshots", st.Snapshots(), false},
		{"memory snapshots", snapshot.NewMemory(), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream := "acc-" + tc.name
			r := newRepo(t, store, aggregate.WithSnapshots(tc.snaps, snapshot.EveryN(5)))
			var want account.State
			for i := range 12 {
				res, err := r.Handle(ctx, stream, account.Open{Owner: "ann"})
				if i > 0 {
					res, err = r.Handle(ctx, stream, account.Deposit{Amount: int64(i)})
				}
				require.NoError(t, err)
				want = res.State
			}
			require.NoError(t, r.Flush(ctx))
			store.mu.Lock()
			store.reads = 0
			store.mu.Unlock()
			got, v, err := r.Load(ctx, stream)
			require.NoError(t, err)
			require.Equal(t, want, got)
			require.EqualValues(t, 12, v)
			store.mu.Lock()
			reads := store.reads
			store.mu.Unlock()
			require.Equal(t, tc.reads, reads > 0, "ReadStream calls: %d", reads)
		})
	}
}

// recordingHistogram records the values of one histogram.
type recordingHistogram struct {
	noop.Int64Histogram
	mu     sync.Mutex
	name   string
	values []int64
	labels []string
}

func (h *recordingHistogram) Record(_ context.Context, v int64, opts ...metric.RecordOption) {
	set := metric.NewRecordConfig(opts).Attributes()
	label, _ := set.Value(telemetry.LabelSnapshot)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.values = append(h.values, v)
	h.labels = append(h.labels, label.AsString())
}

type recordingMeter struct {
	noop.Meter
	h *recordingHistogram
}

func (m recordingMeter) Int64Histogram(name string, _ ...metric.Int64HistogramOption) (metric.Int64Histogram, error) {
	m.h.name = name
	return m.h, nil
}

type recordingProvider struct {
	noop.MeterProvider
	h *recordingHistogram
}

func (p recordingProvider) Meter(string, ...metric.MeterOption) metric.Meter {
	return recordingMeter{h: p.h}
}

// capture is an slog handler that keeps the records of one message.
type capture struct {
	mu      sync.Mutex
	message string
	records []slog.Record
}

func (c *capture) Enabled(context.Context, slog.Level) bool { return true }
func (c *capture) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *capture) WithGroup(string) slog.Handler            { return c }
func (c *capture) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r.Message == c.message {
		c.records = append(c.records, r.Clone())
	}
	return nil
}

// Every load records how many events it replayed (telemetry.
// MetricLoadEvents), and one that replays a long tail logs it at debug
// level.
func TestLoadReplayIsVisible(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		h := &recordingHistogram{}
		logs := &capture{message: "aggregate: load replayed a long tail"}
		writer := newRepo(t, e.store)
		must(t, writer, "acc-1", account.Open{Owner: "ann"})
		for i := range 9 {
			must(t, writer, "acc-1", account.Deposit{Amount: int64(i + 1)})
		}
		if err := e.snaps.Save(t.Context(), snapshot.Snapshot{StreamID: "acc-1", Version: 4, SchemaVersion: 1,
			State: []byte(`{"Open":true,"Owner":"ann","Balance":6}`)}); err != nil {
			t.Fatal(err)
		}
		r, err := aggregate.NewRepository(e.store, registry(t), account.Decider{},
			aggregate.WithSnapshots(e.snaps, snapshot.Never()),
			aggregate.WithTelemetry(telemetry.WithMeterProvider(recordingProvider{h: h})),
			aggregate.WithLogger(slog.New(logs)), aggregate.WithLongReplay(8))
		require.NoError(t, err)
		t.Cleanup(func() { _ = r.Close() })
		require.Equal(t, telemetry.MetricLoadEvents, h.name)

		st, v, err := r.Load(t.Context(), "acc-1")
		require.NoError(t, err)
		require.EqualValues(t, 10, v)
		require.EqualValues(t, 45, st.Balance)
		_, _, err = r.LoadAt(t.Context(), "acc-1", aggregate.AtVersion(3))
		require.NoError(t, err)
		_, _, err = r.LoadAt(t.Context(), "acc-1", aggregate.AtTime(time.Now()))
		require.NoError(t, err)

		h.mu.Lock()
		require.Equal(t, []int64{6, 3, 10}, h.values)
		require.Equal(t, []string{"used", "none", "none"}, h.labels)
		h.mu.Unlock()
		logs.mu.Lock()
		defer logs.mu.Unlock()
		require.Len(t, logs.records, 1, "only the load of 10 events reaches 8")
		rec := logs.records[0]
		require.Equal(t, slog.LevelDebug, rec.Level)
		attrs := map[string]slog.Value{}
		rec.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value; return true })
		require.EqualValues(t, 10, attrs["events"].Int64())
		require.Equal(t, "acc-1", attrs["stream"].String())
	})
}

// A load whose store fails mid-stream reports it.
func TestLoadFailsWithTheStore(t *testing.T) {
	boom := errors.New("boom")
	r := newRepo(t, failingReads{Store: nil, err: boom})
	_, _, err := r.Load(t.Context(), "acc-1")
	require.ErrorIs(t, err, boom)
}

type failingReads struct {
	eventstore.Store
	err error
}

func (f failingReads) ReadStream(context.Context, string, int64) iter.Seq2[eventstore.Record, error] {
	return func(yield func(eventstore.Record, error) bool) { yield(eventstore.Record{}, f.err) }
}
