package commandbus_test

import (
	"testing"
	"time"

	"github.com/eskit/eskit/internal/require"

	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/commandbus/commandbustest"
)

func TestIdempotencyMemoryStore(t *testing.T) {
	commandbustest.RunIdempotencyStore(t, func(*testing.T) commandbus.IdempotencyStore { return commandbus.NewMemoryStore(time.Hour) })
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
