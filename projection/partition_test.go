package projection_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/projection"
)

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"accounts", "bank.accounts", "a", "A-1_b.c", "9lives"} {
		require.NoError(t, projection.ValidateName(ok), ok)
	}
	for _, bad := range []string{"", "p:sys", "{p}", "a b", ".a", "-a", "_a", "ü", "a*", string(make([]byte, 101))} {
		require.ErrorIs(t, projection.ValidateName(bad), projection.ErrInvalidName, "%q", bad)
	}
	require.ErrorIs(t, projection.ValidatePrefix("x{"), projection.ErrInvalidName)
	require.NoError(t, projection.ValidatePrefix("bank:"))
	_, err := projection.NewRunner(nil, nil, nil)
	require.Error(t, err)
	rdb, prefix := testsvc.Redis(t)
	_, err = projection.NewRunner(rdb, newMemstore(), []projection.Projection{projection.New("p:sys", nil)}, projection.WithPrefix(prefix))
	require.ErrorIs(t, err, projection.ErrInvalidName)
}

// Names cannot reach each other's keys: rebuilding "p" leaves "p.sys" (and
// every key of it) alone.
func TestProjectionNamesDoNotOverlap(t *testing.T) {
	rdb, prefix := testsvc.Redis(t)
	store := newMemstore()
	p, psys := newAccounts(t, "p"), newAccounts(t, "p.sys")
	r, err := projection.NewRunner(rdb, store, []projection.Projection{p, psys}, fastOpts(t, prefix)...)
	require.NoError(t, err)
	start(t, r)
	appendEvents(t, store, p.reg, streamNames(3), 50)
	waitHead(t, r, "p", store)
	waitHead(t, r, "p.sys", store)
	ctx := context.Background()
	require.NoError(t, r.Rebuild(ctx, "p"))
	ns, err := r.Namespace(ctx, "p.sys")
	require.NoError(t, err)
	eventually(t, 10*time.Second, "the old namespace of p deleted", func() bool {
		return countKeys(t, rdb, projection.NamespacePatterns(prefix, "p", 1, 1)) == 0
	})
	require.Equal(t, expected(allRecords(t, store)), dump(t, rdb, ns))
	ckpt, err := r.Reader().Checkpoint(ctx, "p.sys")
	require.NoError(t, err)
	require.Equal(t, testsvc.SettledHead(t, store), ckpt)
}

// Runners of a partitioned projection share its partitions: each holds its
// share, one that stops hands its partitions to the others, one that dies
// loses them when its leases expire, and the read model stays the fold of
// the store with every stream applied in order.
func TestPartitionsSharedByRunners(t *testing.T) {
	rdb, prefix := testsvc.Redis(t)
	store := newMemstore()
	const partitions = 6
	newAcc := func() *accounts {
		a := newAccounts(t, "accounts")
		a.partitions = partitions
		return a
	}
	reg := newAccounts(t, "x").reg
	newRunner := func(opts ...projection.Option) (*projection.Runner, *accounts) {
		a := newAcc()
		r, err := projection.NewRunner(rdb, store, []projection.Projection{a}, fastOpts(t, prefix, opts...)...)
		require.NoError(t, err)
		return r, a
	}
	held := func(rs ...*projection.Runner) []int {
		out := make([]int, len(rs))
		for i, r := range rs {
			out[i] = len(r.Held("accounts"))
		}
		return out
	}
	ra, _ := newRunner(projection.WithOwner("a"))
	rb, _ := newRunner(projection.WithOwner("b"))
	rc, _ := newRunner(projection.WithOwner("c"), projection.WithKeepLease())
	start(t, ra)
	waitHead(t, ra, "accounts", store)
	require.Len(t, ra.Held("accounts"), partitions, "alone, a runner holds every partition")
	runB, runC := start(t, rb), start(t, rc)
	eventually(t, 15*time.Second, "partitions shared 2/2/2", func() bool {
		h := held(ra, rb, rc)
		return h[0] == 2 && h[1] == 2 && h[2] == 2
	})

	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() { appendEvents(t, store, reg, streamNames(40)[w*10:w*10+10], 300) })
	}
	wg.Wait()
	waitHead(t, rb, "accounts", store)
	ctx := context.Background()
	ns, err := ra.Namespace(ctx, "accounts")
	require.NoError(t, err)
	require.Equal(t, partitions, ns.Partitions)
	require.Equal(t, expected(allRecords(t, store)), modelOf(t, rdb, ns))

	// b stops: its partitions go to a and c.
	runB.stop()
	eventually(t, 15*time.Second, "a and c hold 3 each", func() bool {
		h := held(ra, rc)
		return h[0] == 3 && h[1] == 3
	})
	appendEvents(t, store, reg, streamNames(40), 200)
	waitHead(t, ra, "accounts", store)
	require.Equal(t, expected(allRecords(t, store)), modelOf(t, rdb, ns))

	// c dies with its leases held: a takes them once they expire.
	runC.stop()
	eventually(t, 15*time.Second, "a holds every partition", func() bool { return len(ra.Held("accounts")) == partitions })
	appendEvents(t, store, reg, streamNames(40), 200)
	waitHead(t, ra, "accounts", store)
	require.Equal(t, expected(allRecords(t, store)), modelOf(t, rdb, ns))

	st, err := ra.Status(ctx, "accounts")
	require.NoError(t, err)
	require.Len(t, st.Parts, partitions)
	require.True(t, st.Ready)
	for _, p := range st.Parts {
		require.Contains(t, p.Owner, "a/", "partition %d", p.Partition)
		require.Zero(t, p.LagEvents)
	}
}

// Leases of several projections spread over the runners instead of all
// landing on the first one.
func TestProjectionsSpreadOverRunners(t *testing.T) {
	rdb, prefix := testsvc.Redis(t)
	store := newMemstore()
	names := []string{"p1", "p2", "p3", "p4"}
	newRunner := func(owner string) *projection.Runner {
		var ps []projection.Projection
		for _, n := range names {
			ps = append(ps, newAccounts(t, n))
		}
		r, err := projection.NewRunner(rdb, store, ps, fastOpts(t, prefix, projection.WithOwner(owner))...)
		require.NoError(t, err)
		return r
	}
	count := func(r *projection.Runner) int {
		n := 0
		for _, name := range names {
			n += len(r.Held(name))
		}
		return n
	}
	r1, r2 := newRunner("one"), newRunner("two")
	start(t, r1)
	start(t, r2)
	eventually(t, 15*time.Second, "two projections each", func() bool { return count(r1) == 2 && count(r2) == 2 })
	appendEvents(t, store, newAccounts(t, "x").reg, streamNames(5), 100)
	for _, n := range names {
		waitHead(t, r1, n, store)
	}
}

// A runner configured with another partition count than the stored read
// model refuses to run.
func TestPartitionCountIsStored(t *testing.T) {
	rdb, prefix := testsvc.Redis(t)
	store := newMemstore()
	a := newAccounts(t, "accounts")
	a.partitions = 2
	r, err := projection.NewRunner(rdb, store, []projection.Projection{a}, fastOpts(t, prefix)...)
	require.NoError(t, err)
	rn := start(t, r)
	waitHead(t, r, "accounts", store)
	rn.stop()
	b := newAccounts(t, "accounts")
	b.partitions = 3
	r2, err := projection.NewRunner(rdb, store, []projection.Projection{b}, fastOpts(t, prefix)...)
	require.NoError(t, err)
	err = r2.Run(context.Background())
	var ce *projection.ConfigError
	require.True(t, errors.As(err, &ce), "got %v", err)
	require.Equal(t, 2, ce.Stored)
	require.Equal(t, 3, ce.Configured)
}

// WithConcurrency bounds how many partitions a runner applies at once;
// without it, a runner applies the partitions it holds concurrently.
func TestConcurrencyLimit(t *testing.T) {
	for _, limit := range []int{1, 0} {
		rdb, prefix := testsvc.Redis(t)
		store := newMemstore()
		reg := newAccounts(t, "x").reg
		appendEvents(t, store, reg, streamNames(40), 400)
		var mu sync.Mutex
		running, most := 0, 0
		slow := projection.New("slow", func(ctx context.Context, b *projection.Batch, rec eventstore.Record) error {
			mu.Lock()
			running++
			most = max(most, running)
			mu.Unlock()
			time.Sleep(200 * time.Microsecond)
			mu.Lock()
			running--
			mu.Unlock()
			return nil
		}, projection.Partitions(4))
		opts := fastOpts(t, prefix)
		if limit > 0 {
			opts = append(opts, projection.WithConcurrency(limit))
		}
		r, err := projection.NewRunner(rdb, store, []projection.Projection{slow}, opts...)
		require.NoError(t, err)
		rn := start(t, r)
		waitHead(t, r, "slow", store)
		rn.stop()
		if limit > 0 {
			require.Equal(t, limit, most, "at most %d partitions at once", limit)
		} else {
			require.Greater(t, most, 1, "partitions applied concurrently")
		}
	}
}
