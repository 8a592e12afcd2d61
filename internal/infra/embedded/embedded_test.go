package embedded_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/internal/infra/embedded"
)

// TestRedis checks the commands eskit's projections and buses rely on.
func TestRedis(t *testing.T) {
	srv, err := embedded.StartRedis("")
	require.NoError(t, err)
	t.Cleanup(srv.Close)
	ctx := t.Context()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })

	// SET NX PX, and expiry with the wall clock.
	ok, err := rdb.SetNX(ctx, "lease", "me", 200*time.Millisecond).Result()
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = rdb.SetNX(ctx, "lease", "you", time.Second).Result()
	require.NoError(t, err)
	require.False(t, ok)
	require.Eventually(t, func() bool { return rdb.Exists(ctx, "lease").Val() == 0 }, 5*time.Second, 20*time.Millisecond)

	// Scripts, by body and by SHA.
	script := redis.NewScript(`return redis.call('INCRBY', KEYS[1], ARGV[1])`)
	n, err := script.Run(ctx, rdb, []string{"counter"}, 2).Int64()
	require.NoError(t, err)
	assert.Equal(t, int64(2), n)
	n, err = script.Run(ctx, rdb, []string{"counter"}, 3).Int64()
	require.NoError(t, err)
	assert.Equal(t, int64(5), n)

	// WATCH + MULTI/EXEC, with a script inside the transaction.
	err = rdb.Watch(ctx, func(tx *redis.Tx) error {
		_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, "k1", "v", 0)
			p.Eval(ctx, `return redis.call('SET', KEYS[2], redis.call('GET', KEYS[1]))`, []string{"k1", "k2"})
			return nil
		})
		return err
	}, "counter")
	require.NoError(t, err)
	assert.Equal(t, "v", rdb.Get(ctx, "k2").Val(), "a script sees earlier writes of its transaction")

	// A transaction whose watched key changed fails.
	err = rdb.Watch(ctx, func(tx *redis.Tx) error {
		require.NoError(t, rdb.Incr(ctx, "counter").Err())
		_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, "k3", "v", 0)
			return nil
		})
		return err
	}, "counter")
	require.ErrorIs(t, err, redis.TxFailedErr)

	// SCAN and UNLINK.
	keys, _, err := rdb.Scan(ctx, 0, "k*", 100).Result()
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"k1", "k2"}, keys)
	require.NoError(t, rdb.Unlink(ctx, keys...).Err())
	assert.Zero(t, rdb.Exists(ctx, "k1", "k2").Val())
}
