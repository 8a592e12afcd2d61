//go:build linux

package projection_test

import (
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/internal/childtest"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/lease"
	"github.com/eskit/eskit/lease/redislease"
	"github.com/eskit/eskit/projection"
)

// The environment of the re-executed test binary: its presence makes
// TestRunnerFreezeFailover the child runner.
const (
	runnerFreezeEnvDB     = "ESKIT_RUNNER_FREEZE_DB"
	runnerFreezeEnvPrefix = "ESKIT_RUNNER_FREEZE_PREFIX"
)

// A runner applies the projection in a child process, which is frozen with
// SIGSTOP; a standby runner in this process takes the partition over within
// the lease TTL and applies what is appended meanwhile. On SIGCONT the
// woken runner commits nothing (its batches are refused by its own lease
// deadline and by the fenced commit), a WATCH transaction with its token
// is refused by Redis, and the read model is the fold of the store.
func TestRunnerFreezeFailover(t *testing.T) {
	if url := os.Getenv(runnerFreezeEnvDB); url != "" {
		freezeRunnerChild(t, url, os.Getenv(runnerFreezeEnvPrefix))
		return
	}
	ctx := t.Context()
	url := testsvc.Database(t)
	pool := testsvc.PoolFor(t, url)
	require.NoError(t, pgstore.Migrate(ctx, pool, pgSchema))
	store, err := pgstore.New(ctx, pool, pgstore.WithSchema(pgSchema))
	require.NoError(t, err)
	t.Cleanup(store.Close)
	rdb, prefix := testsvc.Redis(t)
	acc := newAccounts(t, "accounts")
	appendEvents(t, store, acc.reg, streamNames(4), 100)

	child := childtest.Start(t, "TestRunnerFreezeFailover", "RUNNER", runnerFreezeEnvDB+"="+url, runnerFreezeEnvPrefix+"="+prefix)
	child.Next("active", 60*time.Second)
	reader := projection.NewReader(rdb, prefix, store)
	st, err := reader.Status(ctx, "accounts")
	require.NoError(t, err)
	childLease := lease.Lease{Name: "accounts:0", Holder: st.Parts[0].Owner, Token: st.Parts[0].LeaseToken}
	require.Contains(t, childLease.Holder, "child/", "the child applies the partition")

	standby, err := projection.NewRunner(rdb, store, []projection.Projection{acc}, freezeRunnerOpts(t, prefix, "standby")...)
	require.NoError(t, err)
	start(t, standby)
	time.Sleep(2 * runnerFreezeTTL)
	require.False(t, standby.Active("accounts"), "the standby took over from a live runner")

	require.NoError(t, child.Signal(syscall.SIGSTOP))
	stopped := time.Now()
	appendEvents(t, store, acc.reg, streamNames(4), 40)
	requireTakeover(t, standby, stopped, "SIGSTOP")
	waitHead(t, standby, "accounts", store)
	// The child knows it was frozen by a gap in its clock of at least
	// the TTL; the takeover can come before the TTL has passed (the
	// lease was last renewed up to a third of it before the freeze).
	time.Sleep(time.Until(stopped.Add(2 * runnerFreezeTTL)))

	require.NoError(t, child.Signal(syscall.SIGCONT))
	child.Next("woke", 10*time.Second)
	appendEvents(t, store, acc.reg, streamNames(4), 20)
	quiet := child.Next("quiet", 20*time.Second)
	require.Contains(t, quiet, "committed=0 active=false", "the woken runner committed after it woke: %s", quiet)
	require.NoError(t, child.Wait(20*time.Second))

	// A commit with the frozen runner's lease is refused by Redis itself.
	leases, err := redislease.New(rdb, redislease.WithPrefix(prefix))
	require.NoError(t, err)
	pipe := rdb.Pipeline()
	check := leases.Check(ctx, pipe, childLease)
	_, err = pipe.Exec(ctx)
	require.NoError(t, err)
	require.ErrorIs(t, check.Err(), lease.ErrFenced)

	waitHead(t, standby, "accounts", store)
	st, err = reader.Status(ctx, "accounts")
	require.NoError(t, err)
	require.Equal(t, standby.Owner(), st.Parts[0].Owner)
	require.Greater(t, st.Parts[0].LeaseToken, childLease.Token, "the standby's token is above the frozen runner's")
	ns, err := standby.Namespace(ctx, "accounts")
	require.NoError(t, err)
	require.Equal(t, expected(allRecords(t, store)), dump(t, rdb, ns))
}

// freezeRunnerChild is the child's part: it applies the projection, then
// (once woken from a freeze, seen as a gap in its clock) reports whether
// it committed anything after waking.
func freezeRunnerChild(t *testing.T, url, prefix string) {
	ctx := t.Context()
	pool := testsvc.PoolFor(t, url)
	store, err := pgstore.New(ctx, pool, pgstore.WithSchema(pgSchema))
	require.NoError(t, err)
	t.Cleanup(store.Close)
	opt, err := redis.ParseURL(testsvc.RedisURL())
	require.NoError(t, err)
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	acc := newAccounts(t, "accounts")
	r, err := projection.NewRunner(rdb, store, []projection.Projection{acc}, freezeRunnerOpts(t, prefix, "child")...)
	require.NoError(t, err)
	start(t, r)
	waitHead(t, r, "accounts", store)
	fmt.Println("RUNNER active")

	last := time.Now()
	for time.Since(last) < runnerFreezeTTL {
		last = time.Now()
		time.Sleep(20 * time.Millisecond)
	}
	committed := func() int {
		n := 0
		for _, c := range acc.sideEffects() {
			n += c
		}
		return n
	}
	atWake, appliedAtWake := committed(), len(acc.applies())
	fmt.Println("RUNNER woke")
	time.Sleep(3 * runnerFreezeTTL)
	fmt.Printf("RUNNER quiet committed=%d active=%v applied=%d\n", committed()-atWake, r.Active("accounts"), len(acc.applies())-appliedAtWake)
}
