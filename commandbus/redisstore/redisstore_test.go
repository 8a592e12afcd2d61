package redisstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/commandbus/commandbustest"
	"github.com/eskit/eskit/commandbus/redisstore"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/internal/require"
)

func TestIdempotencyRedisStore(t *testing.T) {
	commandbustest.RunIdempotencyStore(t, func(t *testing.T) commandbus.IdempotencyStore {
		client, prefix := testsvc.Redis(t)
		return redisstore.New(client, prefix, redisstore.PollInterval(5*time.Millisecond))
	})
}

func TestRedisStoreKeys(t *testing.T) {
	client, prefix := testsvc.Redis(t)
	store := redisstore.New(client, prefix, redisstore.ResultTTL(time.Hour), redisstore.LeaseTTL(200*time.Millisecond))
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

type deposit struct{ ID uuid.UUID }

func (d deposit) CommandID() uuid.UUID { return d.ID }

// BenchmarkIdempotency measures a command through the Idempotency
// middleware on Redis: a claim and a completion round trip per command.
func BenchmarkIdempotency(b *testing.B) {
	client, prefix := testsvc.Redis(b)
	bus := commandbus.New(commandbus.WithMiddleware(commandbus.Idempotency(redisstore.New(client, prefix))))
	if err := commandbus.Register(bus, func(context.Context, deposit) (commandbus.Result, error) {
		return commandbus.Result{Version: 1}, nil
	}); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for b.Loop() {
		if _, err := bus.Dispatch(ctx, deposit{ID: uuid.New()}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commands/s")
}
