package commandbus_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/internal/testsvc"
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

// testIdempotency is the behaviour every IdempotencyStore gives the
// Idempotency middleware.
func testIdempotency(t *testing.T, newStore func(t *testing.T) commandbus.IdempotencyStore) {
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

func TestIdempotencyMemoryStore(t *testing.T) {
	testIdempotency(t, func(*testing.T) commandbus.IdempotencyStore { return commandbus.NewMemoryStore(time.Hour) })
}

func TestMemoryStoreExpiresResults(t *testing.T) {
	store := commandbus.NewMemoryStore(time.Minute)
	now := time.Now()
	store.SetClock(func() time.Time { return now })
	ctx := t.Context()
	lease, _, err := store.Claim(ctx, "k")
	require.NoError(t, err)
	require.NoError(t, lease.Complete(ctx, commandbus.Result{Version: 1}))

	now = now.Add(59 * time.Second)
	lease, res, err := store.Claim(ctx, "k")
	require.NoError(t, err)
	require.Nil(t, lease)
	require.EqualValues(t, 1, res.Version)

	now = now.Add(2 * time.Second)
	lease, _, err = store.Claim(ctx, "k")
	require.NoError(t, err)
	require.NotNil(t, lease, "an expired result no longer answers")
	require.NoError(t, lease.Release(ctx))
	require.Zero(t, store.Len(), "expired and released keys are dropped")
}

func TestIdempotencyRedisStore(t *testing.T) {
	testIdempotency(t, func(t *testing.T) commandbus.IdempotencyStore {
		client, prefix := testsvc.Redis(t)
		return commandbus.NewRedisStore(client, prefix, commandbus.RedisPollInterval(5*time.Millisecond))
	})
}

func TestRedisStoreKeys(t *testing.T) {
	client, prefix := testsvc.Redis(t)
	store := commandbus.NewRedisStore(client, prefix, commandbus.RedisResultTTL(time.Hour), commandbus.RedisLease(200*time.Millisecond))
	ctx := t.Context()

	t.Run("result is stored with its TTL", func(t *testing.T) {
		lease, _, err := store.Claim(ctx, "done")
		require.NoError(t, err)
		require.NotNil(t, lease)
		pttl, err := client.PTTL(ctx, prefix+"done").Result()
		require.NoError(t, err)
		require.LessOrEqual(t, pttl, 200*time.Millisecond, "a pending claim lives for the lease")
		want := commandbus.Result{StreamID: "s", Version: 2, Position: eventstore.Position{Tx: 9, Seq: 4}}
		require.NoError(t, lease.Complete(ctx, want))
		pttl, err = client.PTTL(ctx, prefix+"done").Result()
		require.NoError(t, err)
		require.Greater(t, pttl, time.Minute)
		lease, got, err := store.Claim(ctx, "done")
		require.NoError(t, err)
		require.Nil(t, lease)
		require.Equal(t, want, got)
	})

	t.Run("a dead claimant's lease expires", func(t *testing.T) {
		dead, _, err := store.Claim(ctx, "crashed")
		require.NoError(t, err)
		require.NotNil(t, dead)
		// The holder never completes; the next claimant waits out the lease.
		lease, _, err := store.Claim(ctx, "crashed")
		require.NoError(t, err)
		require.NotNil(t, lease)
		// The dead claimant's late release must not free the new claim...
		require.NoError(t, dead.Release(ctx))
		n, err := client.Exists(ctx, prefix+"crashed").Result()
		require.NoError(t, err)
		require.EqualValues(t, 1, n)
		// ...and the first result recorded stays.
		require.NoError(t, lease.Complete(ctx, commandbus.Result{Version: 1}))
		require.NoError(t, dead.Complete(ctx, commandbus.Result{Version: 99}))
		_, got, err := store.Claim(ctx, "crashed")
		require.NoError(t, err)
		require.EqualValues(t, 1, got.Version)
	})
}
