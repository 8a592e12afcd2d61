package commandbus_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/internal/require"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/memstore"
)

// A tally: the decider's add command adds N; the bus's addTo names the
// tally too.
type (
	add   struct{ N int }
	added struct{ N int }
	addTo struct {
		Tally string
		N     int
	}
)

var tally = aggregate.NewDecider(
	func() int { return 0 },
	func(_ int, c add) ([]added, error) {
		if c.N <= 0 {
			return nil, errors.New("n must be positive")
		}
		return []added{{N: c.N}}, nil
	},
	func(n int, e added) int { return n + e.N },
)

func tallyRegistry(t testing.TB) *eventstore.Registry {
	t.Helper()
	reg := eventstore.NewRegistry()
	require.NoError(t, eventstore.Register[added](reg, "tally.Added"))
	return reg
}

func toTally(_ context.Context, c addTo) (string, add, error) {
	return "tally-" + c.Tally, add{N: c.N}, nil
}

func TestHandleWith(t *testing.T) {
	store := memstore.New()
	repo, err := aggregate.NewRepository(store, tallyRegistry(t), tally)
	require.NoError(t, err)
	defer repo.Close()
	bus := commandbus.New()
	require.NoError(t, commandbus.Register(bus, commandbus.HandleWith(repo, toTally)))

	ctx := commandbus.WithCorrelationID(t.Context(), "req-1")
	ctx = commandbus.WithCausationID(ctx, "evt-9")
	id := uuid.New()
	res, err := bus.Dispatch(commandbus.WithCommandID(ctx, id), addTo{Tally: "a", N: 2})
	require.NoError(t, err)
	require.Equal(t, "tally-a", res.StreamID)
	require.EqualValues(t, 1, res.Version)
	require.False(t, res.Position.IsZero())
	require.False(t, res.Duplicate)

	recs, err := eventstore.Collect(store.ReadStream(t.Context(), "tally-a", 1))
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.Equal(t, aggregate.EventID(id, 0), recs[0].ID, "the event's ID derives from the bus's command ID")
	require.Equal(t, "req-1", recs[0].Metadata[eventstore.MetaCorrelationID])
	require.Equal(t, "evt-9", recs[0].Metadata[eventstore.MetaCausationID])

	again, err := bus.Dispatch(commandbus.WithCommandID(ctx, id), addTo{Tally: "a", N: 2})
	require.NoError(t, err)
	require.True(t, again.Duplicate, "the same command ID is answered with the first result")
	require.Equal(t, res.Position, again.Position)
	require.Equal(t, res.Version, again.Version)

	_, err = bus.Dispatch(t.Context(), addTo{Tally: "a", N: -1})
	require.ErrorIs(t, err, aggregate.ErrRejected)

	// A route's error is the outcome; the repository is not called.
	routeErr := errors.New("no such tally")
	require.NoError(t, commandbus.Register(bus, commandbus.HandleWith(repo, func(context.Context, closeAccount) (string, add, error) {
		return "", add{}, routeErr
	})))
	_, err = bus.Dispatch(t.Context(), closeAccount{})
	require.ErrorIs(t, err, routeErr)

	// Nothing to handle with: Register refuses it.
	require.Error(t, commandbus.Register(bus, commandbus.HandleWith[openAccount](repo, nil)))
	require.Error(t, commandbus.Register(bus, commandbus.HandleWith((*aggregate.Repository[int, add, added])(nil), toTally)))
}

// contendedStore makes every append of the repository's conflict: right
// before it, a competing writer appends to the same stream. It counts the
// repository's appends.
type contendedStore struct {
	eventstore.Store
	competing eventstore.Event
	appends   atomic.Int64
}

func (s *contendedStore) Append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events ...eventstore.Event) (eventstore.AppendResult, error) {
	s.appends.Add(1)
	if _, err := s.Store.Append(ctx, stream, eventstore.Any, s.competing); err != nil {
		return eventstore.AppendResult{}, err
	}
	return s.Store.Append(ctx, stream, expected, events...)
}

// The bus's Retry does not retry a conflict the repository retried
// already: 5 appends per command under contention, not 3×5.
func TestRetryDoesNotMultiplyRepositoryRetries(t *testing.T) {
	reg := tallyRegistry(t)
	competing, err := reg.Encode(added{N: 1}, nil)
	require.NoError(t, err)
	retry := commandbus.Retry(commandbus.RetryPolicy{MaxAttempts: 3, Backoff: backoff.Policy{Initial: time.Microsecond, Max: time.Microsecond}})
	run := func(t *testing.T, mws []commandbus.Middleware, opts ...aggregate.Option) (int64, error) {
		t.Helper()
		store := &contendedStore{Store: memstore.New(), competing: competing}
		repo, err := aggregate.NewRepository(store, reg, tally, append([]aggregate.Option{aggregate.WithBackoff(backoff.Policy{})}, opts...)...)
		require.NoError(t, err)
		t.Cleanup(func() { _ = repo.Close() })
		bus := commandbus.New(commandbus.WithMiddleware(mws...))
		require.NoError(t, commandbus.Register(bus, commandbus.HandleWith(repo, toTally)))
		_, err = bus.Dispatch(t.Context(), addTo{Tally: "a", N: 1})
		return store.appends.Load(), err
	}

	t.Run("repository retries", func(t *testing.T) {
		appends, err := run(t, []commandbus.Middleware{retry})
		require.Equal(t, int64(aggregate.DefaultMaxRetries+1), appends, "the repository's attempts only")
		require.ErrorIs(t, err, eventstore.ErrConcurrency)
		var exhausted *aggregate.RetriesExhaustedError
		require.ErrorAs(t, err, &exhausted)
		require.Equal(t, aggregate.DefaultMaxRetries+1, exhausted.Attempts)
		var ce *eventstore.ConcurrencyError
		require.ErrorAs(t, err, &ce)
		require.Equal(t, "tally-a", ce.Stream)
	})
	t.Run("whatever Retryable says", func(t *testing.T) {
		always := commandbus.Retry(commandbus.RetryPolicy{MaxAttempts: 3, Backoff: backoff.Policy{Initial: time.Microsecond, Max: time.Microsecond}, Retryable: func(error) bool { return true }})
		appends, err := run(t, []commandbus.Middleware{always}, aggregate.WithMaxRetries(2))
		require.EqualValues(t, 3, appends)
		require.ErrorIs(t, err, eventstore.ErrConcurrency)
	})
	t.Run("repository retries off: the bus retries", func(t *testing.T) {
		appends, err := run(t, []commandbus.Middleware{retry}, aggregate.WithMaxRetries(0))
		require.EqualValues(t, 3, appends, "the bus's attempts only")
		require.ErrorIs(t, err, eventstore.ErrConcurrency)
	})
	t.Run("nested Retry", func(t *testing.T) {
		appends, err := run(t, []commandbus.Middleware{retry, retry}, aggregate.WithMaxRetries(0))
		require.EqualValues(t, 3, appends, "the inner Retry's attempts only, not 3×3")
		require.ErrorIs(t, err, eventstore.ErrConcurrency)
	})
}
