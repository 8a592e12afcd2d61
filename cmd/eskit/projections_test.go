package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/memstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/projection"
)

func TestProjectionsCommands(t *testing.T) {
	url, _, store := newCommandStore(t)
	rdb, prefix := testsvc.Redis(t)
	ctx := context.Background()

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
	runner, res := runCounts(t, projection.Redis(rdb), prefix, store, counts)

	flags := []string{"-postgres-url", url, "-redis-url", testsvc.RedisURL(), "-prefix", prefix}
	code, out, errOut := eskit(t, append([]string{"projections", "status", "-json"}, flags...)...)
	require.Equal(t, 0, code, errOut)
	var st map[string]any
	require.NoError(t, json.Unmarshal([]byte(strings.TrimSpace(out)), &st))
	require.Equal(t, "counts", st["name"])
	require.EqualValues(t, 2, st["parked"])
	require.Equal(t, res.Position.String(), st["checkpoint"])

	code, out, errOut = eskit(t, append([]string{"projections", "status", "-no-store", "counts"}, flags...)...)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "counts")
	require.Contains(t, out, "LAG")

	// Flags before the name, as well as after it.
	code, out, errOut = eskit(t, "projections", "parked", "list", "-redis-url", testsvc.RedisURL(), "counts", "-prefix", prefix)
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

	code, out, errOut = eskit(t, append([]string{"projections", "rebuild", "-prefix", prefix, "counts", "-timeout", "20s"}, flags...)...)
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

	code, _, errOut = eskit(t, "projections", "rebuild", "counts", "-redis-url", "redis://127.0.0.1:1/0", "-no-store")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "cannot reach Redis")
}

// TestProjectionsPartitioned runs real runners of partitioned projections
// and checks what the operator sees: status (table and JSON) per
// partition with readiness, the build progress of a projection whose first
// build runs, a rebuild's progress lines, and fast failures when no runner
// holds the projection.
func TestProjectionsPartitioned(t *testing.T) {
	url := testsvc.Database(t)
	rdb, prefix := testsvc.Redis(t)
	ctx := context.Background()
	pool := testsvc.PoolFor(t, url)
	require.NoError(t, pgstore.Migrate(ctx, pool, pgstore.DefaultSchema))
	store, err := pgstore.New(ctx, pool)
	require.NoError(t, err)
	t.Cleanup(store.Close)

	// 600 events over 30 streams, so that every partition has some.
	var last eventstore.Position
	for i := range 30 {
		evs := make([]eventstore.Event, 20)
		for j := range evs {
			evs[j] = eventstore.Event{Type: "Deposited", Data: []byte(`{}`)}
		}
		res, err := store.Append(ctx, fmt.Sprintf("acct-%02d", i), eventstore.NoStream, evs...)
		require.NoError(t, err)
		last = res.Position
	}

	// "accounts" replays slowly once slow is set, so that a rebuild lasts
	// long enough to report progress.
	var slow atomic.Bool
	accounts := projection.New("accounts", func(ctx context.Context, b *projection.Batch, rec eventstore.Record) error {
		if b.Replay() && slow.Load() {
			time.Sleep(3 * time.Millisecond)
		}
		b.Pipe().HIncrBy(ctx, b.Key("count"), rec.StreamID, 1)
		return nil
	}, projection.Partitions(3))
	start := func(ps ...projection.Projection) (*projection.Runner, func()) {
		runner, err := projection.NewRunner(rdb, store, ps, projection.WithPrefix(prefix),
			projection.WithLease(2*time.Second, 200*time.Millisecond), projection.WithBatchSize(50))
		require.NoError(t, err)
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = runner.Run(rctx) }()
		stop := func() { cancel(); <-done }
		t.Cleanup(stop)
		return runner, stop
	}
	runner, stopAccounts := start(accounts)
	// "pending" cannot finish its first build until released: it is not
	// ready, and its build progress shows.
	release := make(chan struct{})
	pending := projection.New("pending", func(ctx context.Context, b *projection.Batch, rec eventstore.Record) error {
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
		b.Pipe().HIncrBy(ctx, b.Key("count"), rec.StreamID, 1)
		return nil
	}, projection.Partitions(2))
	_, _ = start(pending)
	defer close(release)

	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	require.NoError(t, runner.Reader().WaitFor(wctx, "accounts", last))
	wcancel()
	// Wait until every partition has an owner (the runners spread them).
	require.Eventually(t, func() bool {
		for _, name := range []string{"accounts", "pending"} {
			st, err := runner.Reader().Status(ctx, name)
			if err != nil || len(st.Parts) == 0 {
				return false
			}
			for _, ps := range st.Parts {
				if ps.Owner == "" {
					return false
				}
			}
		}
		return true
	}, 10*time.Second, 50*time.Millisecond)

	flags := []string{"-postgres-url", url, "-redis-url", testsvc.RedisURL(), "-prefix", prefix}
	code, out, errOut := eskit(t, append([]string{"projections", "status", "-json"}, flags...)...)
	require.Equal(t, 0, code, errOut)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2, out)
	var acc, pend struct {
		Name       string `json:"name"`
		Ready      bool   `json:"ready"`
		NotReady   string `json:"not_ready"`
		Version    int64  `json:"version"`
		Partitions int    `json:"partitions"`
		Checkpoint string `json:"checkpoint"`
		Head       string `json:"head"`
		LagEvents  int64  `json:"lag_events"`
		Rebuilding int64  `json:"rebuilding"`
		LastError  string `json:"last_error"`
		BuildDone  *int64 `json:"build_done"`
		BuildTotal *int64 `json:"build_total"`
		Parts      []struct {
			Partition      int     `json:"partition"`
			Owner          string  `json:"owner"`
			Checkpoint     string  `json:"checkpoint"`
			LagEvents      int64   `json:"lag_events"`
			Parked         int     `json:"parked"`
			Building       *string `json:"building"`
			BuildLagEvents int64   `json:"build_lag_events"`
		} `json:"parts"`
	}
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &acc))
	require.NoError(t, json.Unmarshal([]byte(lines[1]), &pend))

	require.Equal(t, "accounts", acc.Name)
	require.True(t, acc.Ready)
	require.Empty(t, acc.NotReady)
	require.EqualValues(t, 1, acc.Version)
	require.Equal(t, 3, acc.Partitions)
	require.Equal(t, last.String(), acc.Checkpoint)
	require.Equal(t, last.String(), acc.Head)
	require.EqualValues(t, 0, acc.LagEvents)
	require.EqualValues(t, 0, acc.Rebuilding)
	require.Nil(t, acc.BuildDone)
	require.Len(t, acc.Parts, 3)
	for i, ps := range acc.Parts {
		require.Equal(t, i, ps.Partition)
		require.Equal(t, runner.Owner(), ps.Owner)
		require.Equal(t, last.String(), ps.Checkpoint)
		require.EqualValues(t, 0, ps.LagEvents)
		require.Zero(t, ps.Parked)
		require.Nil(t, ps.Building)
		require.EqualValues(t, -1, ps.BuildLagEvents)
	}

	require.Equal(t, "pending", pend.Name)
	require.False(t, pend.Ready)
	require.Contains(t, pend.NotReady, "first build")
	require.EqualValues(t, 0, pend.Version)
	require.Equal(t, 2, pend.Partitions)
	require.EqualValues(t, 1, pend.Rebuilding)
	require.NotNil(t, pend.BuildTotal)
	require.EqualValues(t, last.Seq, *pend.BuildTotal)
	require.NotNil(t, pend.BuildDone)
	require.Less(t, *pend.BuildDone, *pend.BuildTotal)
	require.Len(t, pend.Parts, 2)
	for _, ps := range pend.Parts {
		require.NotEmpty(t, ps.Owner)
		require.NotNil(t, ps.Building)
		require.Positive(t, ps.BuildLagEvents)
	}

	// The table: one row per projection, then one per partition.
	code, out, errOut = eskit(t, append([]string{"projections", "status"}, flags...)...)
	require.Equal(t, 0, code, errOut)
	for _, col := range []string{"READY", "PARTITIONS", "REBUILDING", "LAST ERROR", "PARTITION", "OWNER", "BUILDING", "BUILD LAG EVENTS"} {
		require.Contains(t, out, col)
	}
	require.Regexp(t, `(?m)^accounts\s+yes\s+1\s+3\s+`+regexp.QuoteMeta(last.String())+`\s+`, out)
	require.Regexp(t, `(?m)^pending\s+no: first build running\s+0\s+2\s+`, out)
	for p := range 3 {
		require.Regexp(t, fmt.Sprintf(`(?m)^accounts\s+%d\s+%s\s+%s\s+`, p, regexp.QuoteMeta(runner.Owner()), regexp.QuoteMeta(last.String())), out)
	}
	for p := range 2 {
		require.Regexp(t, fmt.Sprintf(`(?m)^pending\s+%d\s+\S+\s+.*\sv1 @\d+-\d+\s+[1-9]\d*\s+`, p), out)
	}
	require.Regexp(t, `(?m)^pending\s.*\sv1 0/`+fmt.Sprint(last.Seq)+` \(0\.0%\)`, out)

	// A rebuild reports its progress, then switches.
	slow.Store(true)
	code, out, errOut = eskit(t, append([]string{"projections", "rebuild", "accounts", "-timeout", "25s", "-progress", "100ms"}, flags...)...)
	require.Equal(t, 0, code, errOut)
	progress := regexp.MustCompile(`(?m)^rebuilding accounts v2: (\d+)/(\d+) records \([\d.]+%\) in the slowest of 3 partitions, (measuring rate|\d+ records/s)`)
	matches := progress.FindAllStringSubmatch(out, -1)
	require.GreaterOrEqual(t, len(matches), 2, out)
	for _, m := range matches {
		require.Equal(t, fmt.Sprint(last.Seq), m[2], m[0])
	}
	require.Regexp(t, `(?m)^rebuilding accounts v2: .*, \d+ records/s`, out)
	require.Regexp(t, `(?m)^projection accounts rebuilt: now serving v2 \(`, out)
	slow.Store(false)
	ns, err := runner.Reader().Namespace(ctx, "accounts")
	require.NoError(t, err)
	require.EqualValues(t, 2, ns.Version)
	for _, part := range ns.All() {
		got, err := rdb.HGetAll(ctx, part.Key("count")).Result()
		require.NoError(t, err)
		for stream, n := range got {
			require.Equal(t, "20", n, stream)
		}
	}

	// -json: one final object on stdout.
	code, out, errOut = eskit(t, append([]string{"projections", "rebuild", "accounts", "-json", "-timeout", "25s"}, flags...)...)
	require.Equal(t, 0, code, errOut)
	var reb map[string]any
	require.NoError(t, json.Unmarshal([]byte(strings.TrimSpace(out)), &reb), out)
	require.Equal(t, "accounts", reb["name"])
	require.EqualValues(t, 3, reb["version"])

	// Parked records: none, across partitions; retry and skip fan out.
	code, out, errOut = eskit(t, "projections", "parked", "list", "accounts", "-redis-url", testsvc.RedisURL(), "-prefix", prefix)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "PARTITION")
	code, out, errOut = eskit(t, "projections", "parked", "retry", "accounts", "-redis-url", testsvc.RedisURL(), "-prefix", prefix, "-timeout", "20s")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "0 parked record(s) applied, 0 still parked")
	code, out, errOut = eskit(t, "projections", "parked", "skip", "accounts", "-redis-url", testsvc.RedisURL(), "-prefix", prefix, "-timeout", "20s")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "0 parked record(s) skipped")

	// Without a runner, a rebuild fails at once (not after its timeout).
	stopAccounts()
	require.Eventually(t, func() bool {
		st, err := runner.Reader().Status(ctx, "accounts")
		return err == nil && owners(st) == "(3 of 3 partitions unowned)"
	}, 10*time.Second, 50*time.Millisecond)
	began := time.Now()
	code, _, errOut = eskit(t, append([]string{"projections", "rebuild", "accounts", "-timeout", "5m"}, flags...)...)
	require.Less(t, time.Since(began), 5*time.Second)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "no active runner")
	require.Contains(t, errOut, "start a runner")
	code, _, errOut = eskit(t, "projections", "parked", "retry", "accounts", "-redis-url", testsvc.RedisURL(), "-prefix", prefix, "-timeout", "5m")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "no active runner")
	// The registry still knows it, so status works without a runner.
	code, out, errOut = eskit(t, append([]string{"projections", "status", "accounts"}, flags...)...)
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `(?m)^accounts\s+yes\s+3\s+3\s+.*\(3 of 3 partitions unowned\)`, out)
}

// TestProjectionsWrongPrefix: nothing under the prefix given is an error
// that lists the prefixes that have projections.
func TestProjectionsWrongPrefix(t *testing.T) {
	rdb, prefix := testsvc.Redis(t)
	ctx := context.Background()
	runner, err := projection.NewRunner(rdb, memstore.New(), []projection.Projection{
		projection.New("things", func(ctx context.Context, b *projection.Batch, rec eventstore.Record) error { return nil }),
	}, projection.WithPrefix(prefix))
	require.NoError(t, err)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = runner.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, func() bool {
		names, err := runner.Reader().Projections(ctx)
		return err == nil && len(names) == 1
	}, 10*time.Second, 20*time.Millisecond)

	empty := testsvc.Name("eskit_empty") + ":"
	for _, args := range [][]string{
		{"projections", "status", "-no-store"},
		{"projections", "status", "-json", "-no-store"},
		{"projections", "status", "things", "-no-store"},
		{"projections", "rebuild", "things", "-no-store"},
		{"projections", "parked", "list", "things"},
	} {
		code, out, errOut := eskit(t, append(args, "-redis-url", testsvc.RedisURL(), "-prefix", empty)...)
		require.Equal(t, 1, code, "%v: %s", args, errOut)
		require.Empty(t, out, args)
		require.Contains(t, errOut, fmt.Sprintf("no projection is registered under Redis prefix %q", empty), args)
		require.Contains(t, errOut, fmt.Sprintf("\n  %q\n", prefix), args)
	}
	// Under the right prefix the same command works.
	code, out, errOut := eskit(t, "projections", "status", "-no-store", "-redis-url", testsvc.RedisURL(), "-prefix", prefix)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "things")
}

// The projection commands work on read models kept in PostgreSQL
// (-readmodels postgres): status, the parked list, and a retry sent to the
// runner that holds the partition.
func TestProjectionsCommandsOnPostgres(t *testing.T) {
	url, pool, store := newCommandStore(t)
	ctx := context.Background()

	var fixed atomic.Bool
	counts := projection.New("counts", func(ctx context.Context, b *projection.Batch, rec eventstore.Record) error {
		if rec.Type == "Poison" && !fixed.Load() {
			return projection.Permanent(errors.New("cannot apply poison"))
		}
		t := b.Namespace().Table("count")
		b.Queue(`INSERT INTO `+t+` (stream, n) VALUES ($1, 1) ON CONFLICT (stream) DO UPDATE SET n = `+t+`.n + 1`, rec.StreamID)
		return nil
	}, projection.Setup(func(ctx context.Context, tx pgx.Tx, ns projection.Namespace) error {
		_, err := tx.Exec(ctx, `CREATE TABLE `+ns.Table("count")+` (stream text PRIMARY KEY, n bigint NOT NULL)`)
		return err
	}))
	const prefix = "clipg"
	runner, res := runCounts(t, projection.Postgres(pool, pgstore.DefaultSchema), prefix, store, counts)

	flags := []string{"-readmodels", "postgres", "-postgres-url", url, "-prefix", prefix}
	code, out, errOut := eskit(t, append([]string{"projections", "status", "-json"}, flags...)...)
	require.Equal(t, 0, code, errOut)
	var st map[string]any
	require.NoError(t, json.Unmarshal([]byte(strings.TrimSpace(out)), &st))
	require.Equal(t, "counts", st["name"])
	require.EqualValues(t, 2, st["parked"])
	require.Equal(t, res.Position.String(), st["checkpoint"])

	code, out, errOut = eskit(t, append([]string{"projections", "parked", "list", "counts"}, flags...)...)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "cannot apply poison")

	fixed.Store(true)
	code, out, errOut = eskit(t, append([]string{"projections", "parked", "retry", "counts", "-timeout", "20s"}, flags...)...)
	require.Equal(t, 0, code, "%s %s", out, errOut)
	ns, err := runner.Namespace(ctx, "counts")
	require.NoError(t, err)
	var n int64
	require.NoError(t, pool.QueryRow(ctx, `SELECT n FROM `+ns.Table("count")+` WHERE stream = 'a-1'`).Scan(&n))
	require.Equal(t, int64(3), n)

	code, _, errOut = eskit(t, "projections", "status", "-readmodels", "sqlite", "-postgres-url", url)
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "want redis or postgres")
}

// runCounts runs the counts projection on target until the test ends,
// appends its fixture (stream a-1 with a poison event between two others,
// stream b-1) and waits until the runner has applied it; it returns the
// runner and the last append's result.
func runCounts(t *testing.T, target projection.Target, prefix string, store eventstore.Store, counts projection.Projection) (*projection.Runner, eventstore.AppendResult) {
	t.Helper()
	ctx := context.Background()
	runner, err := projection.NewRunnerOn(target, store, []projection.Projection{counts},
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
	defer wcancel()
	require.NoError(t, runner.WaitFor(wctx, "counts", res.Position))
	return runner, res
}

// newCommandStore returns a fresh, migrated database's URL, a pool on it
// and its event store, closed when t ends.
func newCommandStore(t *testing.T) (string, *pgxpool.Pool, *pgstore.Store) {
	t.Helper()
	url := testsvc.Database(t)
	pool := testsvc.PoolFor(t, url)
	require.NoError(t, pgstore.Migrate(context.Background(), pool, pgstore.DefaultSchema))
	store, err := pgstore.New(context.Background(), pool)
	require.NoError(t, err)
	t.Cleanup(store.Close)
	return url, pool, store
}
