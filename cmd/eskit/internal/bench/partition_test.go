package bench

import (
	"bytes"
	"context"
	"errors"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/internal/infra/natstest"
	"github.com/eskit/eskit/internal/infra/testsvc"
)

// recordChildren records the PIDs of the children the bench starts until
// the test ends.
func recordChildren(t *testing.T) func() []int {
	var mu sync.Mutex
	var pids []int
	childStarted = func(pid int) {
		mu.Lock()
		pids = append(pids, pid)
		mu.Unlock()
	}
	t.Cleanup(func() { childStarted = nil })
	return func() []int {
		mu.Lock()
		defer mu.Unlock()
		return append([]int(nil), pids...)
	}
}

// requireGone fails unless every process is gone.
func requireGone(t *testing.T, pids []int) {
	t.Helper()
	for _, pid := range pids {
		err := syscall.Kill(pid, 0)
		require.True(t, errors.Is(err, syscall.ESRCH), "process %d still exists (kill 0: %v)", pid, err)
	}
}

func openTestBench(t *testing.T, ctx context.Context, cases []string, sizes Sizes) *Bench {
	t.Helper()
	natsURL, _ := natstest.ExternalURL()
	if natsURL == "" {
		natsURL = natstest.Start(t).URL()
	}
	b, err := Open(ctx, Config{PostgresURL: testsvc.PostgresURL(), RedisURL: testsvc.RedisURL(), NATSURL: natsURL,
		Cases: cases, Sizes: sizes})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	return b
}

// TestProjectPartitioned runs project-partitioned at a tiny size: real
// runner processes (this test binary, re-executed), all stopped by the
// end.
func TestProjectPartitioned(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pids := recordChildren(t)
	b := openTestBench(t, ctx, []string{"project-partitioned"}, Sizes{Partitioned: 300})
	var results []Result
	require.NoError(t, b.Run(ctx, func(r Result) error { results = append(results, r); return nil }))
	require.Len(t, results, 4)
	for i, r := range results {
		require.Equal(t, "project-partitioned", r.Name)
		require.Positive(t, r.Eskit)
		runners := 1 + 2*(i%2)
		require.Equal(t, runners, r.Params["runners"], r.Variant())
		require.Contains(t, r.Variant(), "concurrency 2")
		require.EqualValues(t, 300, r.Params["events"])
		require.GreaterOrEqual(t, r.Params["applies"], int64(300), "every event applied at least once")
		if runners == 1 {
			require.Nil(t, r.Baseline)
			continue
		}
		require.NotNil(t, r.Ratio)
		require.InDelta(t, r.Eskit/results[i-1].Eskit, *r.Ratio, 1e-9)
		tgt, _ := r.Target()
		require.Equal(t, "ratio ≥ 2.5", tgt)
		if r.Params["start"] == "settled" {
			// The burst came once the partitions were shared: 2 each.
			for _, h := range r.Params["held_at_end"].([]string) {
				require.Len(t, h, len("[0 1]"), "held %v, timeline %v, log %v", r.Params["held_at_end"], r.Params["held_timeline"], r.Params["runner_log"])
			}
		}
	}
	require.Len(t, pids(), 1+3+1+3)
	requireGone(t, pids())
}

// TestPartitionedRoundStopsRunnersOnError ends a round by its context in
// the middle of the catch-up: every runner process is still stopped.
func TestPartitionedRoundStopsRunnersOnError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pids := recordChildren(t)
	b := openTestBench(t, ctx, []string{"project-partitioned"}, Sizes{Partitioned: 20_000})
	e := b.env
	store, err := e.newStore(ctx, "bench_partitioned_err")
	require.NoError(t, err)
	defer store.Close()
	reg, err := newRegistry()
	require.NoError(t, err)
	imports, _, err := partitionedEvents(reg, 20_000)
	require.NoError(t, err)
	for _, a := range imports {
		_, err := store.Import(ctx, a)
		require.NoError(t, err)
	}
	head, err := store.Head(ctx)
	require.NoError(t, err)
	rctx, rcancel := context.WithTimeout(ctx, 3*time.Second) // the catch-up takes about 4 s
	defer rcancel()
	_, _, err = partitionedRound(rctx, e, partitionedRun{store: store, schema: "bench_partitioned_err", head: head}, 3, "err")
	require.Error(t, err)
	require.Len(t, pids(), 3)
	requireGone(t, pids())
}

// TestRunnerChildNeedsSpec: a runner process with a bad configuration
// fails at once with a message.
func TestRunnerChildNeedsSpec(t *testing.T) {
	var out, errOut bytes.Buffer
	code := runChild("{", os.Stdin, &out, &errOut)
	require.Equal(t, 1, code)
	require.Contains(t, errOut.String(), RunnerEnv)
	require.Empty(t, out.String())
}
