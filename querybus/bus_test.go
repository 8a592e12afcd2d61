package querybus_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eskit/eskit/internal/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/querybus"
)

type getBalance struct{ Account string }

type balance struct {
	Account string
	Amount  int64
}

type listAccounts struct{}

func registerBalance(t *testing.T, bus *querybus.Bus, opts ...querybus.RegisterOption) {
	t.Helper()
	require.NoError(t, querybus.Register(bus, func(_ context.Context, q getBalance) (balance, error) {
		return balance{Account: q.Account, Amount: 100}, nil
	}, opts...))
}

func TestAsk(t *testing.T) {
	bus := querybus.New()
	registerBalance(t, bus)
	require.NoError(t, querybus.Register(bus, func(context.Context, *listAccounts) ([]string, error) {
		return nil, nil
	}))

	b, err := querybus.Ask[getBalance, balance](t.Context(), bus, getBalance{Account: "a"})
	require.NoError(t, err)
	require.Equal(t, balance{Account: "a", Amount: 100}, b)

	v, err := bus.Dispatch(t.Context(), getBalance{Account: "b"})
	require.NoError(t, err)
	require.Equal(t, balance{Account: "b", Amount: 100}, v)

	list, err := querybus.Ask[*listAccounts, []string](t.Context(), bus, &listAccounts{})
	require.NoError(t, err)
	require.Nil(t, list)
}

func TestTypedErrors(t *testing.T) {
	bus := querybus.New()
	registerBalance(t, bus)

	err := querybus.Register(bus, func(context.Context, getBalance) (balance, error) { return balance{}, nil })
	require.ErrorIs(t, err, querybus.ErrDuplicateHandler)
	require.Error(t, querybus.Register(bus, func(context.Context, any) (int, error) { return 0, nil }))

	_, err = querybus.Ask[getBalance, int](t.Context(), bus, getBalance{})
	var rte *querybus.ResultTypeError
	require.ErrorAs(t, err, &rte)
	require.ErrorIs(t, err, querybus.ErrResultType)
	require.Equal(t, "int", rte.Want)
	require.Equal(t, "querybus_test.balance", rte.Got)

	_, err = querybus.Ask[listAccounts, []string](t.Context(), bus, listAccounts{})
	var uqe *querybus.UnknownQueryError
	require.ErrorAs(t, err, &uqe)
	require.Equal(t, "querybus_test.listAccounts", uqe.Query)
	require.ErrorIs(t, err, querybus.ErrUnknownQuery)

	_, err = bus.Dispatch(t.Context(), nil)
	require.ErrorIs(t, err, querybus.ErrNilQuery)
	_, err = querybus.Ask[*getBalance, balance](t.Context(), bus, nil)
	require.ErrorIs(t, err, querybus.ErrNilQuery)

	require.NoError(t, querybus.Register(bus, func(context.Context, listAccounts) ([]string, error) { panic("boom") }))
	_, err = querybus.Ask[listAccounts, []string](t.Context(), bus, listAccounts{})
	var pe *querybus.PanicError
	require.ErrorAs(t, err, &pe)
	require.ErrorIs(t, err, querybus.ErrPanic)
	require.Equal(t, "boom", pe.Value)
	require.Contains(t, string(pe.Stack), "TestTypedErrors")
}

func TestMiddlewareOrderAndTimeout(t *testing.T) {
	var trace []string
	mw := func(name string) querybus.Middleware {
		return func(next querybus.Handler) querybus.Handler {
			return func(ctx context.Context, q any) (any, error) {
				trace = append(trace, name+">")
				defer func() { trace = append(trace, "<"+name) }()
				return next(ctx, q)
			}
		}
	}
	bus := querybus.New(querybus.WithMiddleware(mw("a"), mw("b"), querybus.Timeout(time.Millisecond)))
	require.NoError(t, querybus.Register(bus, func(ctx context.Context, _ getBalance) (balance, error) {
		trace = append(trace, "handler")
		<-ctx.Done()
		return balance{}, ctx.Err()
	}))
	_, err := querybus.Ask[getBalance, balance](t.Context(), bus, getBalance{})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Equal(t, []string{"a>", "b>", "handler", "<b", "<a"}, trace)
}

func TestLogging(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	bus := querybus.New(querybus.WithMiddleware(querybus.Logging(logger)))
	registerBalance(t, bus)
	_, _ = querybus.Ask[getBalance, balance](t.Context(), bus, getBalance{})
	_, _ = bus.Dispatch(t.Context(), listAccounts{})

	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m))
		require.Contains(t, m, "duration")
		lines = append(lines, m)
	}
	require.Len(t, lines, 2)
	require.Equal(t, "DEBUG", lines[0]["level"])
	require.Equal(t, "querybus_test.getBalance", lines[0]["query"])
	require.Equal(t, "ok", lines[0]["outcome"])
	require.Equal(t, "WARN", lines[1]["level"])
	require.Equal(t, "error", lines[1]["outcome"])
}

// fakeWaiter is a projection checkpoint table: WaitFor blocks until
// Advance moves the projection's checkpoint to the position or past it.
type fakeWaiter struct {
	mu      sync.Mutex
	at      map[string]eventstore.Position
	changed chan struct{} // closed and replaced on every Advance
	waiting chan string   // receives the projection of every WaitFor call
	calls   atomic.Int32
}

func newFakeWaiter() *fakeWaiter {
	return &fakeWaiter{at: map[string]eventstore.Position{}, changed: make(chan struct{}), waiting: make(chan string, 16)}
}

func (w *fakeWaiter) Advance(projection string, pos eventstore.Position) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.at[projection] = pos
	close(w.changed)
	w.changed = make(chan struct{})
}

func (w *fakeWaiter) WaitFor(ctx context.Context, projection string, pos eventstore.Position) error {
	w.calls.Add(1)
	w.waiting <- projection
	for {
		w.mu.Lock()
		reached := !w.at[projection].Before(pos)
		changed := w.changed
		w.mu.Unlock()
		if reached {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func TestReadYourWrites(t *testing.T) {
	waiter := newFakeWaiter()
	bus := querybus.New(querybus.WithWaiter(waiter))
	var model atomic.Int64 // the read model, written by the "projection"
	require.NoError(t, querybus.Register(bus, func(context.Context, getBalance) (balance, error) {
		return balance{Amount: model.Load()}, nil
	}, querybus.ReadsFrom("accounts")))

	written := eventstore.Position{Tx: 900, Seq: 4}
	ctx := querybus.WithMinPosition(t.Context(), "", written)
	type answer struct {
		b   balance
		err error
	}
	done := make(chan answer, 1)
	go func() {
		b, err := querybus.Ask[getBalance, balance](ctx, bus, getBalance{})
		done <- answer{b, err}
	}()
	require.Equal(t, "accounts", <-waiter.waiting)
	// The projection applies an earlier event: not enough.
	model.Store(50)
	waiter.Advance("accounts", eventstore.Position{Tx: 900, Seq: 3})
	// Then the write itself.
	model.Store(75)
	waiter.Advance("accounts", written)
	got := <-done
	require.NoError(t, got.err)
	require.EqualValues(t, 75, got.b.Amount, "the answer includes the caller's write")

	// Without a requirement, or with one already met, nothing blocks.
	_, err := querybus.Ask[getBalance, balance](t.Context(), bus, getBalance{})
	require.NoError(t, err)
	_, err = querybus.Ask[getBalance, balance](querybus.WithMinPosition(t.Context(), "", eventstore.Position{Tx: 1}), bus, getBalance{})
	require.NoError(t, err)
	require.EqualValues(t, 2, waiter.calls.Load())
}

func TestReadYourWritesTimesOut(t *testing.T) {
	waiter := newFakeWaiter()
	var handled atomic.Bool
	handler := func(context.Context, getBalance) (balance, error) {
		handled.Store(true)
		return balance{}, nil
	}
	want := eventstore.Position{Tx: 77, Seq: 1}

	t.Run("default wait timeout", func(t *testing.T) {
		bus := querybus.New(querybus.WithWaiter(waiter), querybus.WithWaitTimeout(10*time.Millisecond))
		require.NoError(t, querybus.Register(bus, handler, querybus.ReadsFrom("accounts")))
		_, err := querybus.Ask[getBalance, balance](querybus.WithMinPosition(t.Context(), "", want), bus, getBalance{})
		var cte *querybus.ConsistencyTimeoutError
		require.ErrorAs(t, err, &cte)
		require.Equal(t, "accounts", cte.Projection)
		require.Equal(t, want, cte.Want)
		require.ErrorIs(t, err, querybus.ErrConsistencyTimeout)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.False(t, handled.Load(), "the query does not run on a stale read model")
	})

	t.Run("context deadline wins", func(t *testing.T) {
		bus := querybus.New(querybus.WithWaiter(waiter), querybus.WithWaitTimeout(time.Hour))
		require.NoError(t, querybus.Register(bus, handler, querybus.ReadsFrom("accounts")))
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
		defer cancel()
		_, err := querybus.Ask[getBalance, balance](querybus.WithMinPosition(ctx, "ledger", want), bus, getBalance{})
		var cte *querybus.ConsistencyTimeoutError
		require.ErrorAs(t, err, &cte)
		require.Equal(t, "ledger", cte.Projection, "a named projection is waited for")
	})

	t.Run("cancellation is not a timeout", func(t *testing.T) {
		bus := querybus.New(querybus.WithWaiter(waiter))
		require.NoError(t, querybus.Register(bus, handler, querybus.ReadsFrom("accounts")))
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := querybus.Ask[getBalance, balance](querybus.WithMinPosition(ctx, "", want), bus, getBalance{})
		require.ErrorIs(t, err, context.Canceled)
		require.NotErrorIs(t, err, querybus.ErrConsistencyTimeout)
	})
	require.False(t, handled.Load())
}

func TestReadYourWritesRequirements(t *testing.T) {
	var mu sync.Mutex
	waited := map[string]eventstore.Position{}
	waiter := querybus.CheckpointWaiterFunc(func(_ context.Context, p string, pos eventstore.Position) error {
		mu.Lock()
		defer mu.Unlock()
		waited[p] = pos
		return nil
	})
	bus := querybus.New(querybus.WithWaiter(waiter))
	registerBalance(t, bus, querybus.ReadsFrom("accounts", "ledger"))
	require.NoError(t, querybus.Register(bus, func(context.Context, listAccounts) ([]string, error) { return nil, nil }))

	p1, p2 := eventstore.Position{Tx: 10, Seq: 1}, eventstore.Position{Tx: 12, Seq: 1}
	ctx := querybus.WithMinPosition(t.Context(), "", p1)
	ctx = querybus.WithMinPosition(ctx, "ledger", p2)
	ctx = querybus.WithMinPosition(ctx, "ledger", p1) // earlier: no effect
	ctx = querybus.WithMinPosition(ctx, "audit", p1)
	_, err := querybus.Ask[getBalance, balance](ctx, bus, getBalance{})
	require.NoError(t, err)
	require.Equal(t, map[string]eventstore.Position{"accounts": p1, "ledger": p2, "audit": p1}, waited)

	// A requirement on "the query's projections" needs a query that names them.
	_, err = querybus.Ask[listAccounts, []string](querybus.WithMinPosition(t.Context(), "", p1), bus, listAccounts{})
	require.ErrorIs(t, err, querybus.ErrNoProjection)

	// A requirement without a waiter cannot be honoured.
	bare := querybus.New()
	registerBalance(t, bare, querybus.ReadsFrom("accounts"))
	_, err = querybus.Ask[getBalance, balance](querybus.WithMinPosition(t.Context(), "", p1), bare, getBalance{})
	require.ErrorIs(t, err, querybus.ErrNoWaiter)

	// Waiter failures other than deadlines pass through, wrapped.
	broken := errors.New("checkpoint store down")
	failing := querybus.New(querybus.WithWaiter(querybus.CheckpointWaiterFunc(
		func(context.Context, string, eventstore.Position) error { return broken })))
	registerBalance(t, failing, querybus.ReadsFrom("accounts"))
	_, err = querybus.Ask[getBalance, balance](querybus.WithMinPosition(t.Context(), "", p1), failing, getBalance{})
	require.ErrorIs(t, err, broken)
	require.NotErrorIs(t, err, querybus.ErrConsistencyTimeout)
}

type missingErr struct{}

func (missingErr) Error() string  { return "no such account" }
func (missingErr) NotFound() bool { return true }

type rebuildingErr struct{}

func (rebuildingErr) Error() string   { return "read model rebuilding" }
func (rebuildingErr) Temporary() bool { return true }

// "Not found" is an answer (Info), a read model that cannot answer for now
// is Warn: neither is logged as an error.
func TestLoggingLevelsOfExpectedErrors(t *testing.T) {
	for _, tc := range []struct {
		err            error
		level, outcome string
	}{{missingErr{}, "INFO", "not_found"}, {rebuildingErr{}, "WARN", "unavailable"}, {errors.New("disk on fire"), "ERROR", "error"}} {
		var buf bytes.Buffer
		bus := querybus.New(querybus.WithMiddleware(querybus.Logging(slog.New(slog.NewJSONHandler(&buf, nil)))))
		require.NoError(t, querybus.Register(bus, func(context.Context, getBalance) (balance, error) { return balance{}, tc.err }))
		_, err := querybus.Ask[getBalance, balance](t.Context(), bus, getBalance{})
		require.Error(t, err)
		var entry map[string]any
		require.NoError(t, json.Unmarshal(buf.Bytes(), &entry))
		require.Equal(t, tc.level, entry["level"], "%v", tc.err)
		require.Equal(t, tc.outcome, entry["outcome"], "%v", tc.err)
	}
}
