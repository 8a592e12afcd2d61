package projection_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/eventstore/pgstore/pgtest"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/projection"
)

// A targetKit is what the target conformance suite needs of a target:
// per test, a fresh target (and key prefix), the suite's accounts model
// on it, and, where the test can do it without disturbing others, a way
// to cut the target's server connections (as a restart of the server
// would).
type targetKit struct {
	new func(t *testing.T, partitions int) (projection.Target, string, testModel, func())
}

// testModel is the accounts projection of one target.
type testModel interface {
	projection.Projection
	registry() *eventstore.Registry
	failRecord(id uuid.UUID, err error)
	effects(id uuid.UUID) int
	dump(t *testing.T, ns projection.Namespace) map[string]string
}

type redisModel struct {
	*accounts
	rdb redis.UniversalClient
}

func (m redisModel) registry() *eventstore.Registry     { return m.reg }
func (m redisModel) failRecord(id uuid.UUID, err error) { m.setFail(id, err) }
func (m redisModel) effects(id uuid.UUID) int           { return m.sideEffects()[id] }

// dump merges every partition's keys into the form of one partition's.
func (m redisModel) dump(t *testing.T, ns projection.Namespace) map[string]string {
	out := map[string]string{}
	count := 0
	var balance []string
	for _, p := range ns.All() {
		for k, v := range dump(t, m.rdb, p) {
			switch k {
			case "count":
				n, err := strconv.Atoi(v)
				require.NoError(t, err)
				count += n
			case "balance":
				balance = append(balance, strings.Split(strings.TrimPrefix(v, "hash:"), ",")...)
			default:
				out[k] = v
			}
		}
	}
	if count > 0 {
		out["count"] = strconv.Itoa(count)
		slices.Sort(balance)
		out["balance"] = "hash:" + strings.Join(balance, ",")
	}
	return out
}

type pgModel struct {
	*pgAccounts
	pool *pgxpool.Pool
}

func (m pgModel) registry() *eventstore.Registry     { return m.reg }
func (m pgModel) failRecord(id uuid.UUID, err error) { m.setFail(id, err) }
func (m pgModel) effects(id uuid.UUID) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pgAccounts.effects[id]
}
func (m pgModel) dump(t *testing.T, ns projection.Namespace) map[string]string {
	return pgDump(t, m.pool, ns)
}

// The conformance suite of the read-model targets, run on Redis and on
// PostgreSQL: the same runner machinery must give the same read models
// with the same guarantees on both.
func TestTargetConformance(t *testing.T) {
	t.Run("redis", func(t *testing.T) {
		runTargetSuite(t, targetKit{new: func(t *testing.T, partitions int) (projection.Target, string, testModel, func()) {
			rdb, prefix := testsvc.Redis(t)
			// The runner's own client, named, so that its connections
			// alone can be killed.
			opt, err := redis.ParseURL(testsvc.RedisURL())
			require.NoError(t, err)
			opt.ClientName = strings.TrimSuffix(prefix, ":")
			mine := redis.NewClient(opt)
			t.Cleanup(func() { _ = mine.Close() })
			cut := func() {
				list, err := rdb.ClientList(context.Background()).Result()
				require.NoError(t, err)
				for _, line := range strings.Split(list, "\n") {
					var id string
					named := false
					for _, f := range strings.Fields(line) {
						if v, ok := strings.CutPrefix(f, "id="); ok {
							id = v
						}
						if f == "name="+opt.ClientName {
							named = true
						}
					}
					if named && id != "" {
						_ = rdb.Do(context.Background(), "client", "kill", "id", id).Err()
					}
				}
			}
			acc := newAccounts(t, "accounts")
			acc.partitions = partitions
			return projection.Redis(mine), prefix, redisModel{acc, rdb}, cut
		}})
	})
	t.Run("postgres", func(t *testing.T) {
		runTargetSuite(t, targetKit{new: func(t *testing.T, partitions int) (projection.Target, string, testModel, func()) {
			// The runner's own pool, named, so that its connections alone
			// can be killed; the test reads through another.
			url := testsvc.Database(t)
			pool := testsvc.PoolFor(t, url)
			require.NoError(t, pgstore.Migrate(context.Background(), pool, pgSchema))
			cfg, err := pgxpool.ParseConfig(url)
			require.NoError(t, err)
			const app = "eskit-conformance-runner"
			cfg.ConnConfig.RuntimeParams["application_name"] = app
			mine, err := pgxpool.NewWithConfig(context.Background(), cfg)
			require.NoError(t, err)
			t.Cleanup(mine.Close)
			cut := func() {
				// The runner's pool sees a server restart.
				_, err := pool.Exec(context.Background(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
					WHERE datname = current_database() AND application_name = $1`, app)
				require.NoError(t, err)
			}
			acc := newPGAccounts(t, "accounts")
			acc.partitions = partitions
			return projection.Postgres(mine, pgSchema), "conf", pgModel{acc, pool}, cut
		}})
	})
}

// runTargetSuite runs the conformance cases against kit.
func runTargetSuite(t *testing.T, kit targetKit) {
	cases := []struct {
		name string
		fn   func(t *testing.T, kit targetKit)
	}{
		{"BuildAndFollow", confBuildAndFollow},
		{"DuplicatesAndReordering", confDuplicates},
		{"ParkRetrySkip", confParkRetrySkip},
		{"RebuildWhileAppending", confRebuild},
		{"SharedPartitions", confSharedPartitions},
		{"CrashBeforeCommit", confCrashBeforeCommit},
		{"ConnectionsCut", confConnectionsCut},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.fn(t, kit) })
	}
}

// requireFold requires that the runner's active read model is the fold of
// the store's records (but skip).
func requireFold(t *testing.T, r *projection.Runner, m testModel, store eventstore.FeedReader, skip ...uuid.UUID) {
	t.Helper()
	ns, err := r.Namespace(context.Background(), m.Name())
	require.NoError(t, err)
	require.Equal(t, expected(allRecords(t, store), skip...), m.dump(t, ns))
}

// requireFreshRebuild rebuilds the read model and requires the new
// namespace to equal the fold too (and so what was there before).
func requireFreshRebuild(t *testing.T, r *projection.Runner, m testModel, store eventstore.FeedReader) {
	t.Helper()
	before, err := r.Namespace(context.Background(), m.Name())
	require.NoError(t, err)
	old := m.dump(t, before)
	require.NoError(t, r.Rebuild(context.Background(), m.Name()))
	after, err := r.Namespace(context.Background(), m.Name())
	require.NoError(t, err)
	require.Greater(t, after.Version, before.Version)
	require.Equal(t, old, m.dump(t, after), "the read model differs from a fresh rebuild")
	requireFold(t, r, m, store)
}

func confRunner(t *testing.T, target projection.Target, prefix string, m testModel, store projection.Source, opts ...projection.Option) *projection.Runner {
	t.Helper()
	r, err := projection.NewRunnerOn(target, store, []projection.Projection{m}, fastOpts(t, prefix, append([]projection.Option{projection.WithBatchSize(40)}, opts...)...)...)
	require.NoError(t, err)
	return r
}

func confBuildAndFollow(t *testing.T, kit targetKit) {
	target, prefix, m, _ := kit.new(t, 1)
	store := newMemstore()
	appendEvents(t, store, m.registry(), streamNames(5), 200)
	r := confRunner(t, target, prefix, m, store)
	start(t, r)
	waitHead(t, r, m.Name(), store)
	requireFold(t, r, m, store)
	appendEvents(t, store, m.registry(), streamNames(5), 50)
	waitHead(t, r, m.Name(), store)
	requireFold(t, r, m, store)
	requireFreshRebuild(t, r, m, store)
}

// lyingFeed repeats and reorders the records of the pages it reads: a
// page holds every record twice, pairs swapped (its last record stays the
// page's last, so reading goes on from it).
type lyingFeed struct{ eventstore.Store }

func (f lyingFeed) ReadAll(ctx context.Context, after eventstore.Position, limit int) ([]eventstore.Record, error) {
	recs, err := f.Store.ReadAll(ctx, after, limit)
	if err != nil || len(recs) < 3 {
		return recs, err
	}
	out := make([]eventstore.Record, 0, 2*len(recs))
	for i := 0; i+1 < len(recs)-1; i += 2 {
		out = append(out, recs[i+1], recs[i], recs[i+1])
	}
	if len(recs)%2 == 0 {
		out = append(out, recs[len(recs)-2])
	}
	out = append(out, recs[len(recs)-1], recs[len(recs)-1])
	return out, nil
}

func confDuplicates(t *testing.T, kit targetKit) {
	target, prefix, m, _ := kit.new(t, 2)
	store := newMemstore()
	appendEvents(t, store, m.registry(), streamNames(4), 150)
	r := confRunner(t, target, prefix, m, lyingFeed{store})
	start(t, r)
	waitHead(t, r, m.Name(), store)
	requireFold(t, r, m, store)
	appendEvents(t, store, m.registry(), streamNames(4), 40)
	waitHead(t, r, m.Name(), store)
	requireFold(t, r, m, store)
}

func confParkRetrySkip(t *testing.T, kit targetKit) {
	ctx := context.Background()
	target, prefix, m, _ := kit.new(t, 1)
	store := newMemstore()
	appendEvents(t, store, m.registry(), streamNames(3), 30)
	r := confRunner(t, target, prefix, m, store)
	start(t, r)
	waitHead(t, r, m.Name(), store)
	// Failing before it is appended: a runner following the store could
	// apply it first otherwise.
	bad := newEvent(t, m.registry(), Deposited{Amount: 500})
	m.failRecord(bad.ID, errors.New("boom"))
	_, err := store.Append(ctx, "acct-1", eventstore.Any, bad)
	require.NoError(t, err)
	badID := bad.ID
	behind := appendOne(t, store, m.registry(), "acct-1", Deposited{Amount: 7})
	other := appendOne(t, store, m.registry(), "acct-2", Deposited{Amount: 3})
	waitHead(t, r, m.Name(), store)
	parked, err := r.Reader().Parked(ctx, m.Name())
	require.NoError(t, err)
	require.Len(t, parked, 2, "the failing record and the one behind it")
	requireFold(t, r, m, store, badID, behind.ID)
	require.Zero(t, m.effects(badID), "a parked record's side effect fired")
	require.Equal(t, 1, m.effects(other.ID))
	st, err := r.Status(ctx, m.Name())
	require.NoError(t, err)
	require.Equal(t, 2, st.Parked)
	require.Contains(t, st.LastError, "boom")

	// Still failing: a retry applies nothing and keeps both parked.
	res, err := r.RetryParked(ctx, m.Name())
	require.NoError(t, err)
	require.Zero(t, res.Applied)
	require.Equal(t, 2, res.Remaining)
	// Skip the failing one: the one behind it is still parked, behind
	// nothing now; a retry applies it.
	n, err := r.SkipParked(ctx, m.Name(), badID)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	res, err = r.RetryParked(ctx, m.Name())
	require.NoError(t, err)
	require.Equal(t, 1, res.Applied)
	requireFold(t, r, m, store, badID)
	require.Equal(t, 1, m.effects(behind.ID))
	parked, err = r.Reader().Parked(ctx, m.Name())
	require.NoError(t, err)
	require.Empty(t, parked)
}

func confRebuild(t *testing.T, kit targetKit) {
	target, prefix, m, _ := kit.new(t, 3)
	store := newMemstore()
	appendEvents(t, store, m.registry(), streamNames(6), 200)
	r := confRunner(t, target, prefix, m, store)
	start(t, r)
	built := waitHead(t, r, m.Name(), store)
	stop := appendWhileRunning(t, store, m.registry(), 5, 20*time.Millisecond)
	require.NoError(t, r.Rebuild(context.Background(), m.Name()))
	stop()
	waitHead(t, r, m.Name(), store)
	requireFold(t, r, m, store)
	// Side effects fired once per record appended after the first build
	// began, none in a build's replay of history.
	for _, rec := range allRecords(t, store) {
		want := 1
		if !rec.Position.After(built) {
			want = 0
		}
		require.Equal(t, want, m.effects(rec.ID), "side effects of %s", rec.Position)
	}
}

func confSharedPartitions(t *testing.T, kit targetKit) {
	target, prefix, m, _ := kit.new(t, 4)
	store := newMemstore()
	appendEvents(t, store, m.registry(), streamNames(8), 200)
	a := confRunner(t, target, prefix, m, store, projection.WithOwner("a"))
	b := confRunner(t, target, prefix, m, store, projection.WithOwner("b"))
	runA := start(t, a)
	start(t, b)
	eventually(t, 20*time.Second, "both runners to hold partitions", func() bool {
		return len(a.Held(m.Name())) > 0 && len(b.Held(m.Name())) > 0 && len(a.Held(m.Name()))+len(b.Held(m.Name())) == 4
	})
	appendEvents(t, store, m.registry(), streamNames(8), 100)
	waitHead(t, a, m.Name(), store)
	requireFold(t, a, m, store)
	runA.stop()
	eventually(t, 20*time.Second, "the other runner to hold every partition", func() bool { return len(b.Held(m.Name())) == 4 })
	appendEvents(t, store, m.registry(), streamNames(8), 40)
	waitHead(t, b, m.Name(), store)
	requireFold(t, b, m, store)
}

// A runner dies between applying a batch and committing it (its lease
// stays until it expires): a standby takes over, and the read model is
// the fold, each record applied once, equal to a fresh rebuild.
func confCrashBeforeCommit(t *testing.T, kit targetKit) {
	target, prefix, m, _ := kit.new(t, 1)
	store := newMemstore()
	appendEvents(t, store, m.registry(), streamNames(4), 100)
	var commits atomic.Int32
	crashed := make(chan struct{})
	var once sync.Once
	var runA *running
	a := confRunner(t, target, prefix, m, store, projection.WithOwner("a"), projection.WithKeepLease(),
		projection.WithBeforeCommit(func(ctx context.Context, _ string) {
			if commits.Add(1) == 2 {
				once.Do(func() { close(crashed) })
				<-ctx.Done() // dies here: the batch never commits
			}
		}))
	runA = start(t, a)
	<-crashed
	go runA.stop()
	b := confRunner(t, target, prefix, m, store, projection.WithOwner("b"))
	start(t, b)
	waitHead(t, b, m.Name(), store)
	requireFold(t, b, m, store)
	requireFreshRebuild(t, b, m, store)
}

// The target's connections are cut mid-run (a server restart, as the
// runner sees it): the runner reconnects and goes on, and the read model
// is the fold, equal to a fresh rebuild.
func confConnectionsCut(t *testing.T, kit targetKit) {
	target, prefix, m, cut := kit.new(t, 2)
	store := newMemstore()
	appendEvents(t, store, m.registry(), streamNames(4), 100)
	r := confRunner(t, target, prefix, m, store)
	start(t, r)
	waitHead(t, r, m.Name(), store)
	stop := appendWhileRunning(t, store, m.registry(), 5, time.Millisecond)
	for range 3 {
		time.Sleep(100 * time.Millisecond)
		cut()
	}
	stop()
	requireRecovered(t, r, m, store)
}

// requireRecovered waits until reads pass again after the target's
// connections broke (a pooled connection that was killed fails its next
// use once, and is then replaced), then checks that the read model is the
// fold of the store, and equal to a fresh rebuild.
func requireRecovered(t *testing.T, r *projection.Runner, m testModel, store eventstore.FeedReader) {
	t.Helper()
	eventually(t, 30*time.Second, "reads through the runner's pool to pass again", func() bool {
		for range 10 {
			if _, err := r.Status(context.Background(), m.Name()); err != nil {
				return false
			}
		}
		return true
	})
	waitHead(t, r, m.Name(), store)
	requireFold(t, r, m, store)
	requireFreshRebuild(t, r, m, store)
}

// A PostgreSQL server of the test's own holds the read model; it is shut
// down (fast shutdown: sessions end, open transactions roll back) and,
// later, killed (SIGKILL: crash recovery from the WAL), each time left
// down for a second while appends go on. The runner waits the server out,
// goes on, and the read model is the fold, equal to a fresh rebuild.
func TestPostgresTargetSurvivesServerRestarts(t *testing.T) {
	srv := pgtest.StartServer(t)
	ctx := context.Background()
	pool := testsvc.PoolFor(t, srv.URL())
	require.NoError(t, pgstore.Migrate(ctx, pool, pgSchema))
	acc := newPGAccounts(t, "accounts")
	acc.partitions = 2
	m := pgModel{acc, pool}
	store := newMemstore()
	appendEvents(t, store, m.registry(), streamNames(4), 100)
	r := confRunner(t, projection.Postgres(pool, pgSchema), "restart", m, store)
	start(t, r)
	waitHead(t, r, m.Name(), store)
	stop := appendWhileRunning(t, store, m.registry(), 5, time.Millisecond)
	for _, down := range []func(){srv.Stop, srv.Kill} {
		time.Sleep(300 * time.Millisecond)
		down()
		time.Sleep(time.Second)
		srv.Start()
	}
	time.Sleep(300 * time.Millisecond)
	stop()
	requireRecovered(t, r, m, store)
}
