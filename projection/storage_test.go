package projection_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/internal/infra/clustertest"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/projection"
)

// Redis comes back with older data (restarted from an older RDB file, as
// after a failover to a lagging replica or a restore) while the runner
// holds its lease: the runner notices that the stored checkpoint is not
// the one it committed, reloads what is there and re-applies from the
// store. The read model ends as the fold of the store, and no side effect
// fires twice.
func TestRedisRestoredFromOlderData(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ttl     time.Duration // long: the restored lease is still this runner's
		downFor time.Duration // past the TTL: the runner loses its lease meanwhile
	}{{"lease restored", 30 * time.Second, 0}, {"lease expired", time.Second, 1500 * time.Millisecond}} {
		t.Run(tc.name, func(t *testing.T) {
			node := clustertest.StartRedis(t, clustertest.RedisOptions{})
			rdb := node.Client(t)
			store := newMemstore()
			acc := newAccounts(t, "accounts")
			r, err := projection.NewRunner(rdb, store, []projection.Projection{acc},
				fastOpts(t, "bank:", projection.WithLease(tc.ttl, 100*time.Millisecond))...)
			require.NoError(t, err)
			start(t, r)
			ctx := context.Background()

			appendEvents(t, store, acc.reg, streamNames(5), 200)
			waitHead(t, r, "accounts", store)
			require.NoError(t, rdb.Save(ctx).Err())
			old, err := os.ReadFile(filepath.Join(node.DataDir(), "dump.rdb"))
			require.NoError(t, err)

			appendEvents(t, store, acc.reg, streamNames(5), 200)
			waitHead(t, r, "accounts", store)

			// The server dies and comes back from the older snapshot.
			require.NoError(t, node.Kill())
			require.NoError(t, os.WriteFile(filepath.Join(node.DataDir(), "dump.rdb"), old, 0o644))
			time.Sleep(tc.downFor)
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			require.NoError(t, node.Restart(rctx))

			appendEvents(t, store, acc.reg, streamNames(5), 100)
			head := testsvc.SettledHead(t, store)
			wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
			defer wcancel()
			require.NoError(t, r.WaitFor(wctx, "accounts", head))
			ns, err := r.Namespace(ctx, "accounts")
			require.NoError(t, err)
			recs := allRecords(t, store)
			require.Equal(t, expected(recs), dump(t, rdb, ns), "the read model is the fold of the store")
			effects := effectsAfter(t, acc, recs[200:])
			for _, rec := range recs {
				require.LessOrEqual(t, effects[rec.ID], 1, "side effects of %s v%d", rec.StreamID, rec.Version)
			}
			for _, rec := range recs[200:] {
				require.Equal(t, 1, effects[rec.ID], "side effects of %s v%d", rec.StreamID, rec.Version)
			}
		})
	}
}

// One partition loses its data (as a cluster master restarted empty would):
// readers are told the read model is not ready (never served partial), the
// partition is rebuilt from the store, and the model is whole again.
func TestPartitionLostIsRebuiltNotServedPartial(t *testing.T) {
	rdb, prefix := testsvc.Redis(t)
	store := newMemstore()
	acc := newAccounts(t, "accounts")
	acc.partitions = 3
	r, err := projection.NewRunner(rdb, store, []projection.Projection{acc}, fastOpts(t, prefix)...)
	require.NoError(t, err)
	start(t, r)
	ctx := context.Background()
	appendEvents(t, store, acc.reg, streamNames(12), 300)
	waitHead(t, r, "accounts", store)
	ns, err := r.Namespace(ctx, "accounts")
	require.NoError(t, err)

	// Partition 1 loses everything while its rebuild will be held up.
	block := make(chan struct{})
	acc.mu.Lock()
	acc.block = block
	acc.mu.Unlock()
	lost := projection.NamespacePatterns(prefix, "accounts", 3, 1)[1]
	keys, err := rdb.Keys(ctx, lost).Result()
	require.NoError(t, err)
	require.NotEmpty(t, keys)
	require.NoError(t, rdb.Del(ctx, keys...).Err())

	eventually(t, 10*time.Second, "readers told the model is not ready", func() bool {
		_, err := r.Namespace(ctx, "accounts")
		return errors.Is(err, projection.ErrNotReady)
	})
	st, err := r.Status(ctx, "accounts")
	require.NoError(t, err)
	require.False(t, st.Ready)
	require.Contains(t, st.NotReady, "lost")

	acc.mu.Lock()
	acc.block = nil
	acc.mu.Unlock()
	close(block)
	eventually(t, 10*time.Second, "the model ready again", func() bool {
		_, err := r.Namespace(ctx, "accounts")
		return err == nil
	})
	waitHead(t, r, "accounts", store)
	require.Equal(t, expected(allRecords(t, store)), modelOf(t, rdb, ns))
}

// Redis is flushed under a running runner: it notices, registers the
// projection again (operators' tools see it at once), rebuilds it from the
// store without serving a partial model, and fires no side effect twice.
func TestRedisFlushedUnderARunningRunner(t *testing.T) {
	node := clustertest.StartRedis(t, clustertest.RedisOptions{})
	rdb := node.Client(t)
	store := newMemstore()
	acc := newAccounts(t, "accounts")
	r, err := projection.NewRunner(rdb, store, []projection.Projection{acc}, fastOpts(t, "bank:")...)
	require.NoError(t, err)
	start(t, r)
	ctx := context.Background()
	waitHead(t, r, "accounts", store) // the first build is done: every record is new
	appendEvents(t, store, acc.reg, streamNames(5), 300)
	waitHead(t, r, "accounts", store)

	block := make(chan struct{})
	acc.mu.Lock()
	acc.block = block
	acc.mu.Unlock()
	require.NoError(t, rdb.FlushAll(ctx).Err())
	eventually(t, 10*time.Second, "the projection registered again", func() bool {
		names, err := r.Reader().Projections(ctx)
		return err == nil && len(names) == 1
	})
	_, err = r.Namespace(ctx, "accounts")
	require.ErrorIs(t, err, projection.ErrNotReady, "a rebuilding model is not served")
	acc.mu.Lock()
	acc.block = nil
	acc.mu.Unlock()
	close(block)

	appendEvents(t, store, acc.reg, streamNames(5), 50)
	waitHead(t, r, "accounts", store)
	ns, err := r.Namespace(ctx, "accounts")
	require.NoError(t, err)
	recs := allRecords(t, store)
	require.Equal(t, expected(recs), dump(t, rdb, ns))
	effects := effectsAfter(t, acc, recs)
	for _, rec := range recs {
		require.Equal(t, 1, effects[rec.ID], "side effects of %s v%d at %s (of %d)", rec.StreamID, rec.Version, rec.Position, len(recs))
	}
}
