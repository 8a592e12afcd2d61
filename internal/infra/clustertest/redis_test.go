package clustertest_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/eskit/eskit/internal/infra/clustertest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestKeySlot(t *testing.T) {
	// Reference values from CLUSTER KEYSLOT.
	for key, want := range map[string]int{
		"":                 0,
		"foo":              12182,
		"bar":              5061,
		"123456789":        12739,
		"{user1000}.a":     clustertest.KeySlot("user1000"),
		"x{}y":             clustertest.KeySlot("x{}y"),
		"{a}{b}":           clustertest.KeySlot("a"),
		"proj:{p:3}:check": clustertest.KeySlot("p:3"),
	} {
		assert.Equal(t, want, clustertest.KeySlot(key), key)
	}
}

// keysPerMaster returns, for every master, a key whose slot it serves.
func keysPerMaster(t *testing.T, ctx context.Context, c *clustertest.RedisCluster, prefix string) map[string]string {
	t.Helper()
	masters, err := c.Masters(ctx)
	require.NoError(t, err)
	keys := map[string]string{}
	for i := 0; len(keys) < len(masters); i++ {
		k := fmt.Sprintf("%s%d", prefix, i)
		m, err := c.MasterOf(ctx, k)
		require.NoError(t, err)
		if _, ok := keys[m]; !ok {
			keys[m] = k
		}
	}
	return keys
}

func TestClusterRedis(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := clustertest.StartRedisCluster(t, clustertest.RedisClusterOptions{NodeTimeout: time.Second})
	require.Len(t, c.Addrs(), 6)
	masters, err := c.Masters(ctx)
	require.NoError(t, err)
	require.Len(t, masters, 3)
	covered := 0
	for _, rs := range masters {
		for _, r := range rs {
			covered += r.End - r.Start + 1
		}
	}
	require.Equal(t, 16384, covered)

	cl := c.Client(t)
	_, ok := cl.(*redis.ClusterClient)
	require.True(t, ok, "%T", cl)
	for i := range 50 {
		k := fmt.Sprintf("key-%d", i*7919)
		slot, err := cl.ClusterKeySlot(ctx, k).Result()
		require.NoError(t, err)
		require.Equal(t, int(slot), clustertest.KeySlot(k), k)
	}
	keys := keysPerMaster(t, ctx, c, "k")
	for m, k := range keys {
		require.NoError(t, cl.Set(ctx, k, m, 0).Err())
		// The key really lives on that master.
		v, err := c.NodeClient(t, m).Get(ctx, k).Result()
		require.NoError(t, err)
		require.Equal(t, m, v)
	}

	// Kill one master: its replica takes over its slots.
	var victim string
	for m := range masters {
		victim = m
		break
	}
	killed := time.Now()
	require.NoError(t, c.Kill(victim))
	require.Zero(t, c.PID(victim))
	require.NoError(t, c.WaitHealthy(ctx))
	t.Logf("failover of %s settled %v after kill -9", victim, time.Since(killed).Round(time.Millisecond))
	after, err := c.Masters(ctx)
	require.NoError(t, err)
	require.Len(t, after, 3)
	require.NotContains(t, after, victim)
	for m, k := range keys {
		owner, err := c.MasterOf(ctx, k)
		require.NoError(t, err)
		if m == victim {
			require.NotEqual(t, victim, owner)
		}
		require.Eventually(t, func() bool {
			return cl.Set(ctx, k, "after", 0).Err() == nil
		}, 20*time.Second, 50*time.Millisecond, "write to %s's slots after its failover", m)
	}

	// Restart it: it rejoins as a replica of its successor.
	require.NoError(t, c.Restart(ctx, victim))
	require.NoError(t, c.WaitHealthy(ctx))
	nc := c.NodeClient(t, victim)
	role, err := nc.Do(ctx, "ROLE").Slice()
	require.NoError(t, err)
	require.Equal(t, "slave", role[0])

	// Freeze a master and thaw it: the cluster stays or becomes healthy again.
	after, err = c.Masters(ctx)
	require.NoError(t, err)
	var frozen string
	for m := range after {
		frozen = m
		break
	}
	require.NoError(t, c.Stop(frozen))
	time.Sleep(200 * time.Millisecond)
	require.NoError(t, c.Cont(frozen))
	require.NoError(t, c.WaitHealthy(ctx))
}

func TestRedisNodeRestartFromOlderRDB(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	n := clustertest.StartRedis(t, clustertest.RedisOptions{})
	c := n.Client(t)
	require.NoError(t, c.Set(ctx, "k", "old", 0).Err())
	require.NoError(t, c.Save(ctx).Err())
	old := filepath.Join(t.TempDir(), "dump.rdb")
	copyFile(t, filepath.Join(n.DataDir(), "dump.rdb"), old)
	require.NoError(t, c.Set(ctx, "k", "new", 0).Err())

	require.NoError(t, n.Kill())
	require.Zero(t, n.PID())
	copyFile(t, old, filepath.Join(n.DataDir(), "dump.rdb"))
	require.NoError(t, n.Restart(ctx))
	v, err := c.Get(ctx, "k").Result()
	require.NoError(t, err)
	require.Equal(t, "old", v, "the server went back in time")
}

func TestRedisNodeRestartFromOlderAOF(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	n := clustertest.StartRedis(t, clustertest.RedisOptions{
		Persistence: clustertest.Persistence{AppendOnly: true, AppendFsync: "always"},
	})
	c := n.Client(t)
	for i := range 10 {
		require.NoError(t, c.Set(ctx, "k", i, 0).Err())
	}
	// Freeze the server while copying, so the AOF files are consistent.
	require.NoError(t, n.Stop())
	old := filepath.Join(t.TempDir(), "appendonlydir")
	require.NoError(t, os.CopyFS(old, os.DirFS(filepath.Join(n.DataDir(), "appendonlydir"))))
	require.NoError(t, n.Cont())
	for i := 10; i < 20; i++ {
		require.NoError(t, c.Set(ctx, "k", i, 0).Err())
	}

	// Kill: with appendfsync always nothing acknowledged is lost...
	require.NoError(t, n.Kill())
	require.NoError(t, n.Restart(ctx))
	v, err := c.Get(ctx, "k").Int()
	require.NoError(t, err)
	require.Equal(t, 19, v)

	// ...but restoring the older AOF loses the tail.
	require.NoError(t, n.Kill())
	aof := filepath.Join(n.DataDir(), "appendonlydir")
	require.NoError(t, os.RemoveAll(aof))
	require.NoError(t, os.CopyFS(aof, os.DirFS(old)))
	require.NoError(t, n.Restart(ctx))
	v, err = c.Get(ctx, "k").Int()
	require.NoError(t, err)
	require.Equal(t, 9, v)
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(to, data, 0o644))
}
