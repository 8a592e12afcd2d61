package projection_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/internal/infra/clustertest"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/projection"
)

// A partitioned projection on a real Redis Cluster (3 masters, 3
// replicas): every commit stays in its partition's slot, the partitions
// spread over the masters, and when a master is killed (kill -9) mid-load
// its replica takes over — possibly without the last writes it had
// acknowledged — and the read model still ends as the fold of the store.
func TestClusterRedisMasterKilledMidLoad(t *testing.T) {
	c := clustertest.StartRedisCluster(t, clustertest.RedisClusterOptions{NodeTimeout: time.Second})
	rdb := c.Client(t)
	ctx := context.Background()
	store := newMemstore()
	const partitions = 6
	newRunner := func(owner string) *projection.Runner {
		a := newAccounts(t, "accounts")
		a.partitions = partitions
		r, err := projection.NewRunner(rdb, store, []projection.Projection{a},
			fastOpts(t, "bank:", projection.WithOwner(owner), projection.WithLease(3*time.Second, 300*time.Millisecond))...)
		require.NoError(t, err)
		return r
	}
	r1, r2 := newRunner("one"), newRunner("two")
	start(t, r1)
	start(t, r2)
	waitHead(t, r1, "accounts", store)

	// The partitions' slots are on every master.
	ns, err := r1.Namespace(ctx, "accounts")
	require.NoError(t, err)
	masters := map[string][]int{}
	for _, p := range ns.All() {
		m, err := c.MasterOf(ctx, p.Key("balance"))
		require.NoError(t, err)
		masters[m] = append(masters[m], p.Partition)
	}
	require.Len(t, masters, 3, "partitions over masters: %v", masters)

	reg := newAccounts(t, "x").reg
	stopAppending := appendWhileRunning(t, store, reg, 5, time.Millisecond)
	time.Sleep(time.Second)

	// Kill the master of partition 0 and measure how long its partitions
	// stall: until their checkpoint moves again.
	victim, err := c.MasterOf(ctx, ns.ForPartition(0).Key("balance"))
	require.NoError(t, err)
	reader := r1.Reader()
	before, err := reader.Status(ctx, "accounts")
	require.NoError(t, err)
	killed := time.Now()
	require.NoError(t, c.Kill(victim))
	var stall time.Duration
	eventually(t, 60*time.Second, "the killed master's partitions move again", func() bool {
		st, err := reader.Status(ctx, "accounts")
		if err != nil || !st.Ready {
			return false
		}
		for _, p := range masters[victim] {
			if !st.Parts[p].Checkpoint.After(before.Parts[p].Checkpoint) {
				return false
			}
		}
		stall = time.Since(killed)
		return true
	})
	t.Logf("partitions %v on the killed master %s stalled %v", masters[victim], victim, stall.Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond)
	stopAppending()

	head := testsvc.SettledHead(t, store)
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	require.NoError(t, r1.WaitFor(wctx, "accounts", head))
	ns, err = r1.Namespace(ctx, "accounts")
	require.NoError(t, err)
	recs := allRecords(t, store)
	require.Equal(t, expected(recs), modelOf(t, rdb, ns), "the read model is the fold of the store")
	_ = eventstore.Position{}
}
