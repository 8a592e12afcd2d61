package aggregate_test

import (
	"context"
	"iter"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/aggregate/internal/account"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/memstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/eventstore/pgstore/pgtest"
	"github.com/eskit/eskit/snapshot"
)

type repo = aggregate.Repository[account.State, account.Command, account.Event]

// env is one backend: an event store and a snapshot store.
type env struct {
	store eventstore.Store
	snaps snapshot.Store
}

var backends = []struct {
	name string
	new  func(t testing.TB) env
}{
	{"memstore", func(testing.TB) env {
		return env{store: memstore.New(), snaps: snapshot.NewMemory()}
	}},
	{"pgstore", func(t testing.TB) env {
		pool := pgtest.Pool(t)
		st, err := pgstore.New(context.Background(), pool, pgstore.WithAutoMigrate())
		if err != nil {
			t.Fatalf("pgstore.New: %v", err)
		}
		t.Cleanup(st.Close)
		return env{store: st, snaps: pgstore.NewSnapshots(pool, pgstore.DefaultSchema)}
	}},
}

// eachBackend runs fn as a subtest on every backend.
func eachBackend(t *testing.T, fn func(t *testing.T, e env)) {
	t.Helper()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { fn(t, b.new(t)) })
	}
}

func registry(t testing.TB) *eventstore.Registry {
	t.Helper()
	r, err := account.Registry()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// newRepo builds an account repository and closes it when t ends.
func newRepo(t testing.TB, store eventstore.Store, opts ...aggregate.Option) *repo {
	t.Helper()
	opts = append([]aggregate.Option{aggregate.WithLogger(testLogger(t))}, opts...)
	r, err := aggregate.NewRepository(store, registry(t), account.Decider{}, opts...)
	if err != nil {
		t.Fatalf("NewRepository: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// must handles cmd and fails the test on error.
func must(t testing.TB, r *repo, stream string, cmd account.Command, opts ...aggregate.HandleOption) aggregate.Result[account.State, account.Event] {
	t.Helper()
	res, err := r.Handle(context.Background(), stream, cmd, opts...)
	if err != nil {
		t.Fatalf("Handle(%s, %#v): %v", stream, cmd, err)
	}
	return res
}

func streamRecords(t testing.TB, s eventstore.Store, stream string) []eventstore.Record {
	t.Helper()
	recs, err := eventstore.Collect(s.ReadStream(context.Background(), stream, 1))
	if err != nil {
		t.Fatalf("read stream %s: %v", stream, err)
	}
	return recs
}

// hookStore wraps a store: it runs beforeAppend before every Append, and
// counts the ReadStream calls and the records they yield.
type hookStore struct {
	eventstore.Store
	beforeAppend func(ctx context.Context, n int64)
	appends      atomic.Int64
	reads        atomic.Int64
	read         atomic.Int64
}

func (h *hookStore) Append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events ...eventstore.Event) (eventstore.AppendResult, error) {
	n := h.appends.Add(1)
	if h.beforeAppend != nil {
		h.beforeAppend(ctx, n)
	}
	return h.Store.Append(ctx, stream, expected, events...)
}

func (h *hookStore) ReadStream(ctx context.Context, stream string, from int64) iter.Seq2[eventstore.Record, error] {
	return func(yield func(eventstore.Record, error) bool) {
		h.reads.Add(1)
		for r, err := range h.Store.ReadStream(ctx, stream, from) {
			if err == nil {
				h.read.Add(1)
			}
			if !yield(r, err) {
				return
			}
		}
	}
}

// snapStore wraps a snapshot store: saveHook, when set, runs instead of
// the wrapped Save.
type snapStore struct {
	snapshot.Store
	mu       sync.Mutex
	saveHook func(ctx context.Context, s snapshot.Snapshot) error
	loadErr  error
}

func (s *snapStore) Load(ctx context.Context, stream string) (snapshot.Snapshot, error) {
	if s.loadErr != nil {
		return snapshot.Snapshot{}, s.loadErr
	}
	return s.Store.Load(ctx, stream)
}

func (s *snapStore) Save(ctx context.Context, snap snapshot.Snapshot) error {
	s.mu.Lock()
	hook := s.saveHook
	s.mu.Unlock()
	if hook != nil {
		return hook(ctx, snap)
	}
	return s.Store.Save(ctx, snap)
}
