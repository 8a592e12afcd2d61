package redisconn_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/eskit/eskit/internal/infra/clustertest"
	"github.com/eskit/eskit/internal/infra/redisconn"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// failoverBound is how long a test waits for writes to a failed master's
// slots to work again: generous, as the machine may be busy; the figure
// itself is logged.
const failoverBound = 30 * time.Second

// keysPerMaster returns, for every master, a key whose slot it serves.
func keysPerMaster(t *testing.T, ctx context.Context, c *clustertest.RedisCluster) map[string]string {
	t.Helper()
	masters, err := c.Masters(ctx)
	require.NoError(t, err)
	keys := map[string]string{}
	for i := 0; len(keys) < len(masters); i++ {
		k := fmt.Sprintf("key-%d", i)
		m, err := c.MasterOf(ctx, k)
		require.NoError(t, err)
		if _, ok := keys[m]; !ok {
			keys[m] = k
		}
	}
	return keys
}

func TestClusterOpen(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := clustertest.StartRedisCluster(t, clustertest.RedisClusterOptions{})
	addrs := c.Addrs()
	goRedisForm := "redis://" + addrs[0] + "?addr=" + strings.Join(addrs[1:3], "&addr=")
	for _, raw := range []string{c.URL(), goRedisForm, "redis+cluster://" + addrs[3]} {
		t.Run(raw, func(t *testing.T) {
			cl, err := redisconn.Open(ctx, raw, redisconn.WithPing())
			require.NoError(t, err)
			t.Cleanup(func() { _ = cl.Close() })
			cc, ok := cl.(*redis.ClusterClient)
			require.True(t, ok, "%T", cl)
			assert.Equal(t, redisconn.ClusterStateReloadInterval, cc.Options().ClusterStateReloadInterval)
			for m, k := range keysPerMaster(t, ctx, c) {
				require.NoError(t, cl.Set(ctx, k, m, time.Minute).Err())
				v, err := cl.Get(ctx, k).Result()
				require.NoError(t, err)
				require.Equal(t, m, v)
				// The key is on that master, and on its replica.
				v, err = c.NodeClient(t, m).Get(ctx, k).Result()
				require.NoError(t, err)
				require.Equal(t, m, v)
				// A transaction on the key's slot.
				_, err = cl.TxPipelined(ctx, func(p redis.Pipeliner) error {
					p.Incr(ctx, "{"+k+"}:n")
					p.Set(ctx, "{"+k+"}:m", m, time.Minute)
					return nil
				})
				require.NoError(t, err)
			}
		})
	}
}

// failoverStats is what a writer saw while a master failed over.
type failoverStats struct {
	recovered time.Duration // from the fault to the first acknowledged write to the master's slots
	longest   time.Duration // the longest single call
	failed    int           // calls that returned an error
}

// measureFailover writes to a key of one master every 50 ms through a client
// of Open (with opts), applies fault to that master, and measures how long
// until writes to its slots succeed again.
func measureFailover(t *testing.T, c *clustertest.RedisCluster, fault func(addr string) error, opts ...redisconn.Option) (failoverStats, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*failoverBound)
	defer cancel()
	cl := c.Client(t, opts...)
	keys := keysPerMaster(t, ctx, c)
	var victim, key string
	for m, k := range keys {
		victim, key = m, k
		break
	}
	// Warm up: every master's pool is connected and the slot map loaded.
	for _, k := range keys {
		require.NoError(t, cl.Set(ctx, k, "warm", 0).Err())
	}
	var st failoverStats
	faultAt := time.Now()
	require.NoError(t, fault(victim))
	for i := 0; ; i++ {
		since := time.Since(faultAt)
		require.Less(t, since, failoverBound, "writes to %s's slots still fail %v after the fault", victim, since)
		callCtx, callCancel := context.WithTimeout(ctx, 10*time.Second)
		began := time.Now()
		err := cl.Set(callCtx, key, i, 0).Err()
		callCancel()
		st.longest = max(st.longest, time.Since(began))
		if err == nil {
			st.recovered = time.Since(faultAt)
			break
		}
		st.failed++
		time.Sleep(50 * time.Millisecond)
	}
	owner, err := c.MasterOf(ctx, key)
	require.NoError(t, err)
	require.NotEqual(t, victim, owner, "the write succeeded on a new master")
	return st, victim
}

func TestClusterFailoverKill(t *testing.T) {
	t.Parallel()
	c := clustertest.StartRedisCluster(t, clustertest.RedisClusterOptions{NodeTimeout: time.Second})
	st, victim := measureFailover(t, c, c.Kill)
	t.Logf("kill -9 of master %s (cluster-node-timeout 1s): writes to its slots through redisconn's client work again after %v (%d failed calls, longest call %v)",
		victim, st.recovered.Round(time.Millisecond), st.failed, st.longest.Round(time.Millisecond))

	// The same client keeps working once the old master is back as a replica.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, c.Restart(ctx, victim))
	require.NoError(t, c.WaitHealthy(ctx))
	cl := c.Client(t)
	for _, k := range keysPerMaster(t, ctx, c) {
		require.NoError(t, cl.Set(ctx, k, "after", 0).Err())
	}
}

func TestClusterFailoverFreeze(t *testing.T) {
	t.Parallel()
	c := clustertest.StartRedisCluster(t, clustertest.RedisClusterOptions{NodeTimeout: time.Second})
	st, frozen := measureFailover(t, c, c.Stop)
	t.Logf("SIGSTOP of master %s (cluster-node-timeout 1s): writes to its slots through redisconn's client work again after %v (%d failed calls, longest call %v)",
		frozen, st.recovered.Round(time.Millisecond), st.failed, st.longest.Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, c.Cont(frozen))
	require.NoError(t, c.WaitHealthy(ctx))
}

// TestClusterFailoverGoRedisDefaults measures the same kill -9 with
// go-redis's default ClusterOptions, for comparison. It takes about a
// minute, so it runs only with ESKIT_REDISCONN_COMPARE=1.
func TestClusterFailoverGoRedisDefaults(t *testing.T) {
	if os.Getenv("ESKIT_REDISCONN_COMPARE") != "1" {
		t.Skip("set ESKIT_REDISCONN_COMPARE=1 to measure go-redis's defaults (about a minute)")
	}
	t.Parallel()
	c := clustertest.StartRedisCluster(t, clustertest.RedisClusterOptions{NodeTimeout: time.Second})
	defaults := redisconn.WithClusterOptions(func(o *redis.ClusterOptions) {
		o.ClusterStateReloadInterval, o.MaxRedirects = 0, 0
		o.MinRetryBackoff, o.MaxRetryBackoff = 0, 0
		o.DialTimeout, o.DialerRetries, o.ReadTimeout, o.WriteTimeout = 0, 0, 0, 0
		o.ContextTimeoutEnabled = false
	})
	const bound = 2 * time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	cl := c.Client(t, defaults)
	keys := keysPerMaster(t, ctx, c)
	var victim, key string
	for m, k := range keys {
		victim, key = m, k
		break
	}
	for _, k := range keys {
		require.NoError(t, cl.Set(ctx, k, "warm", 0).Err())
	}
	var st failoverStats
	faultAt := time.Now()
	require.NoError(t, c.Kill(victim))
	for i := 0; ; i++ {
		require.Less(t, time.Since(faultAt), bound)
		began := time.Now()
		err := cl.Set(ctx, key, i, 0).Err()
		st.longest = max(st.longest, time.Since(began))
		if err == nil {
			st.recovered = time.Since(faultAt)
			break
		}
		st.failed++
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("kill -9 of master %s (cluster-node-timeout 1s): writes to its slots through a client with go-redis's defaults work again after %v (%d failed calls, longest call %v)",
		victim, st.recovered.Round(time.Millisecond), st.failed, st.longest.Round(time.Millisecond))
}
