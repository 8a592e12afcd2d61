package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/internal/testsvc"
	"github.com/eskit/eskit/projection"
)

func TestProjectionsCommands(t *testing.T) {
	url := testsvc.Database(t)
	rdb, prefix := testsvc.Redis(t)
	ctx := context.Background()
	pool := testsvc.PoolFor(t, url)
	require.NoError(t, pgstore.Migrate(ctx, pool, pgstore.DefaultSchema))
	store, err := pgstore.New(ctx, pool)
	require.NoError(t, err)
	t.Cleanup(store.Close)

	// A projection counting events per stream that fails on "poison" events
	// until fixed.
	var fixed atomic.Bool
	counts := projection.New("counts", func(ctx context.Context, b *projection.Batch, rec eventstore.Record) error {
		if rec.Type == "Poison" && !fixed.Load() {
			return projection.Permanent(errors.New("cannot apply poison"))
		}
		b.Pipe().HIncrBy(ctx, b.Key("count"), rec.StreamID, 1)
		return nil
	})
	runner, err := projection.NewRunner(rdb, store, []projection.Projection{counts},
		projection.WithPrefix(prefix), projection.WithLease(2*time.Second, 200*time.Millisecond))
	require.NoError(t, err)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = runner.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done })

	ev := func(typ string) eventstore.Event { return eventstore.Event{Type: typ, Data: []byte(`{}`)} }
	_, err = store.Append(ctx, "a-1", eventstore.NoStream, ev("Opened"), ev("Poison"), ev("Deposited"))
	require.NoError(t, err)
	res, err := store.Append(ctx, "b-1", eventstore.NoStream, ev("Opened"))
	require.NoError(t, err)
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	require.NoError(t, runner.WaitFor(wctx, "counts", res.Position))
	wcancel()

	flags := []string{"-postgres-url", url, "-redis-url", testsvc.RedisURL(), "-prefix", prefix}
	code, out, errOut := eskit(t, append([]string{"projections", "status", "-json"}, flags...)...)
	require.Equal(t, 0, code, errOut)
	var st map[string]any
	require.NoError(t, json.Unmarshal([]byte(strings.TrimSpace(out)), &st))
	require.Equal(t, "counts", st["name"])
	require.EqualValues(t, 2, st["parked"])
	require.Equal(t, res.Position.String(), st["checkpoint"])

	code, out, errOut = eskit(t, append([]string{"projections", "status", "counts"}, flags...)...)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "counts")
	require.Contains(t, out, "LAG")

	code, out, errOut = eskit(t, "projections", "parked", "list", "counts", "-redis-url", testsvc.RedisURL(), "-prefix", prefix)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "Poison")
	require.Contains(t, out, "cannot apply poison")

	code, out, errOut = eskit(t, "projections", "parked", "retry", "counts", "-redis-url", testsvc.RedisURL(), "-prefix", prefix, "-timeout", "20s")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "0 parked record(s) applied, 2 still parked")

	fixed.Store(true)
	code, out, errOut = eskit(t, "projections", "parked", "retry", "counts", "-stream", "a-1", "-redis-url", testsvc.RedisURL(), "-prefix", prefix, "-timeout", "20s")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "2 parked record(s) applied, 0 still parked")

	code, out, errOut = eskit(t, "projections", "rebuild", "counts", "-redis-url", testsvc.RedisURL(), "-prefix", prefix, "-timeout", "20s")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "now serving v2")
	ns, err := runner.Namespace(ctx, "counts")
	require.NoError(t, err)
	got, err := rdb.HGetAll(ctx, ns.Key("count")).Result()
	require.NoError(t, err)
	require.Equal(t, map[string]string{"a-1": "3", "b-1": "1"}, got)

	code, _, errOut = eskit(t, "projections", "parked", "skip", "counts", "-id", "not-a-uuid", "-prefix", prefix)
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "bad event ID")

	code, _, errOut = eskit(t, append([]string{"projections", "status", "nope"}, flags...)...)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, `unknown projection "nope"`)

	code, _, errOut = eskit(t, "projections", "rebuild", "counts", "-redis-url", "redis://127.0.0.1:1/0")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "cannot reach Redis")
}
