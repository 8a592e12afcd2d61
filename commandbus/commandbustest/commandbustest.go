// Package commandbustest is the conformance suite of
// commandbus.IdempotencyStore: a store implementation's tests call
// RunIdempotencyStore.
package commandbustest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/internal/require"
)

// countingStore reports every Claim call on claims before delegating.
type countingStore struct {
	commandbus.IdempotencyStore
	claims chan struct{}
}

func (s countingStore) Claim(ctx context.Context, key string) (commandbus.Lease, commandbus.Result, error) {
	s.claims <- struct{}{}
	return s.IdempotencyStore.Claim(ctx, key)
}

type deposit struct {
	ID   uuid.UUID
	Fail bool
}

func (d deposit) CommandID() uuid.UUID { return d.ID }

// RunIdempotencyStore checks the behaviour every IdempotencyStore gives
// the Idempotency middleware, on fresh stores from newStore: duplicates
// answered with the first result, concurrent executions of one command ID
// run once, failures released for a retry.
func RunIdempotencyStore(t *testing.T, newStore func(t *testing.T) commandbus.IdempotencyStore) {
	t.Helper()
	type handlerFunc = func(context.Context, deposit) (commandbus.Result, error)
	newBus := func(t *testing.T, store commandbus.IdempotencyStore, h handlerFunc) *commandbus.Bus {
		bus := commandbus.New(commandbus.WithMiddleware(commandbus.Idempotency(store)))
		require.NoError(t, commandbus.Register(bus, h))
		return bus
	}

	t.Run("duplicate answered with the first result", func(t *testing.T) {
		var calls atomic.Int64
		bus := newBus(t, newStore(t), func(context.Context, deposit) (commandbus.Result, error) {
			n := calls.Add(1)
			return commandbus.Result{StreamID: "acc-1", Version: n, Position: eventstore.Position{Tx: 100 + uint64(n), Seq: 3}}, nil
		})
		ctx := commandbus.WithCommandID(t.Context(), uuid.New())
		first, err := bus.Dispatch(ctx, deposit{})
		require.NoError(t, err)
		require.False(t, first.Duplicate)
		again, err := bus.Dispatch(ctx, deposit{})
		require.NoError(t, err)
		require.True(t, again.Duplicate)
		again.Duplicate = false
		require.Equal(t, first, again)
		require.EqualValues(t, 1, calls.Load())

		// Another command ID is another command; no ID at all passes through.
		_, err = bus.Dispatch(t.Context(), deposit{ID: uuid.New()})
		require.NoError(t, err)
		_, err = bus.Dispatch(t.Context(), deposit{})
		require.NoError(t, err)
		_, err = bus.Dispatch(t.Context(), deposit{})
		require.NoError(t, err)
		require.EqualValues(t, 4, calls.Load())
	})

	t.Run("another command with the ID is not answered with the first result", func(t *testing.T) {
		// The handler (a repository, an event store) decides what a reused
		// ID means; the middleware must not mask it.
		var calls atomic.Int64
		bus := newBus(t, newStore(t), func(_ context.Context, d deposit) (commandbus.Result, error) {
			calls.Add(1)
			if d.Fail {
				return commandbus.Result{}, errors.New("command ID reused for another command")
			}
			return commandbus.Result{StreamID: "acc-1", Version: 1}, nil
		})
		ctx := commandbus.WithCommandID(t.Context(), uuid.New())
		_, err := bus.Dispatch(ctx, deposit{})
		require.NoError(t, err)
		res, err := bus.Dispatch(ctx, deposit{Fail: true})
		require.Error(t, err, "answered %+v", res)
		require.EqualValues(t, 2, calls.Load())
	})

	t.Run("failure does not poison the key", func(t *testing.T) {
		var calls atomic.Int64
		bus := newBus(t, newStore(t), func(_ context.Context, d deposit) (commandbus.Result, error) {
			calls.Add(1)
			if d.Fail {
				return commandbus.Result{}, errors.New("insufficient funds")
			}
			if calls.Load() == 2 {
				panic("flaky")
			}
			return commandbus.Result{Version: 1}, nil
		})
		ctx := commandbus.WithCommandID(t.Context(), uuid.New())
		_, err := bus.Dispatch(ctx, deposit{Fail: true})
		require.Error(t, err)
		_, err = bus.Dispatch(ctx, deposit{})
		require.ErrorIs(t, err, commandbus.ErrPanic)
		res, err := bus.Dispatch(ctx, deposit{})
		require.NoError(t, err)
		require.False(t, res.Duplicate)
		require.EqualValues(t, 3, calls.Load())
	})

	t.Run("concurrent duplicates run once", func(t *testing.T) {
		const n = 8
		var calls atomic.Int64
		started, release := make(chan struct{}), make(chan struct{})
		store := countingStore{newStore(t), make(chan struct{}, n)}
		bus := newBus(t, store, func(context.Context, deposit) (commandbus.Result, error) {
			if calls.Add(1) == 1 {
				close(started)
			}
			<-release
			return commandbus.Result{StreamID: "acc-1", Version: calls.Load(), Position: eventstore.Position{Tx: 42, Seq: 1}}, nil
		})
		cmd := deposit{ID: uuid.New()}
		var (
			wg      sync.WaitGroup
			results [n]commandbus.Result
			errs    [n]error
		)
		for i := range n {
			wg.Go(func() { results[i], errs[i] = commandbus.Send(t.Context(), bus, cmd) })
		}
		// Hold the first execution until every dispatch has reached the store.
		<-started
		for range n {
			<-store.claims
		}
		close(release)
		wg.Wait()

		require.EqualValues(t, 1, calls.Load(), "exactly one execution")
		var originals int
		for i := range n {
			require.NoError(t, errs[i])
			if !results[i].Duplicate {
				originals++
			}
			r := results[i]
			r.Duplicate = false
			require.Equal(t, commandbus.Result{StreamID: "acc-1", Version: 1, Position: eventstore.Position{Tx: 42, Seq: 1}}, r)
		}
		require.Equal(t, 1, originals)
	})

	t.Run("a waiting duplicate gives up with its context", func(t *testing.T) {
		store := newStore(t)
		lease, _, err := store.Claim(t.Context(), "held")
		require.NoError(t, err)
		require.NotNil(t, lease)
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		defer cancel()
		_, _, err = store.Claim(ctx, "held")
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.NoError(t, lease.Release(t.Context()))
		lease, _, err = store.Claim(t.Context(), "held")
		require.NoError(t, err)
		require.NotNil(t, lease, "a released key can be claimed again")
	})
}
