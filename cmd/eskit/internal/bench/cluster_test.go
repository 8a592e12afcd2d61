package bench

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/internal/infra/redisconn"
	"github.com/eskit/eskit/projection"
)

// TestClusterLocal starts the bench's throwaway Redis Cluster, writes
// through it, and stops it: every node process is gone and its directory
// removed. It fails (naming the package to install) when redis-server or
// redis-cli is missing.
func TestClusterLocal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pids := recordChildren(t)
	lc, err := startLocalCluster(ctx, slog.Default())
	require.NoError(t, err)
	stopped := false
	defer func() {
		if !stopped {
			_ = lc.stop()
		}
	}()
	require.Len(t, pids(), clusterMasters*(1+clusterReplicas))

	c, err := redisconn.Open(ctx, lc.url(), redisconn.WithPing())
	require.NoError(t, err)
	defer c.Close()
	cc := c.(*redis.ClusterClient)
	ns := projection.Namespace{Prefix: "t:", Projection: "p", Version: 1, Partitions: clusterPartitions}
	masters := map[string]bool{}
	for p := range clusterPartitions {
		key := ns.ForPartition(p).Key("k")
		require.NoError(t, cc.Set(ctx, key, p, 0).Err())
		node, err := cc.MasterForKey(ctx, key)
		require.NoError(t, err)
		masters[node.Options().Addr] = true
	}
	require.Len(t, masters, clusterMasters, "the partitions spread over every master")
	require.NoError(t, clusterDeletePrefix(ctx, cc, "t:"))
	for p := range clusterPartitions {
		n, err := cc.Exists(ctx, ns.ForPartition(p).Key("k")).Result()
		require.NoError(t, err)
		require.Zero(t, n, "partition "+strconv.Itoa(p))
	}

	require.NoError(t, lc.stop())
	stopped = true
	requireGone(t, pids())
	_, err = os.Stat(lc.dir)
	require.True(t, os.IsNotExist(err), "cluster directory removed: %v", err)
}

// TestClusterCases runs the cluster cases at a tiny size on the throwaway
// cluster, and checks that it is stopped when the bench closes.
func TestClusterCases(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pids := recordChildren(t)
	b := openTestBench(t, ctx, ClusterCaseNames(), Sizes{Rounds: 2, ProjectCluster: 500})
	require.Contains(t, b.Versions().RedisCluster, "local, 3 masters + 3 replicas")
	var results []Result
	require.NoError(t, b.Run(ctx, func(r Result) error { results = append(results, r); return nil }))
	require.Len(t, results, 2)
	require.Equal(t, "project-live-cluster", results[0].Name)
	require.Equal(t, "project-rebuild-cluster", results[1].Name)
	for _, r := range results {
		require.Positive(t, r.Eskit, r.Name)
		require.NotNil(t, r.Baseline, r.Name)
		require.NotNil(t, r.Ratio, r.Name)
		require.Equal(t, clusterPartitions, r.Params["partitions"], r.Name)
	}
	require.NoError(t, b.Close(ctx))
	requireGone(t, pids())
}
