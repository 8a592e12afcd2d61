package bench

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
)

// appendCacheSize is the state cache of the repository of the append
// cases' cache variants.
const appendCacheSize = 10_000

// storeDefaults says, in a result's parameters, that eskit ran with the
// store's defaults, as users get them.
const storeDefaults = "pgstore defaults (cross-process notification on)"

// appendFixture is a store with repositories of accounts (without and with
// a state cache) and a plain table. The store and the repositories have
// the defaults users get (the store's cross-process notification is on).
type appendFixture struct {
	schema string
	store  *pgstore.Store
	reg    *eventstore.Registry
	repo   *repo
	cached *repo // with aggregate.WithStateCache
}

func newAppendFixture(ctx context.Context, e *env, schema string) (*appendFixture, error) {
	store, err := e.newStore(ctx, schema)
	if err != nil {
		return nil, err
	}
	reg, err := newRegistry()
	if err != nil {
		store.Close()
		return nil, err
	}
	r, err := aggregate.NewRepository(store, reg, accountDecider{}, aggregate.WithLogger(e.quiet))
	if err != nil {
		store.Close()
		return nil, err
	}
	cached, err := aggregate.NewRepository(store, reg, accountDecider{}, aggregate.WithLogger(e.quiet),
		aggregate.WithStateCache(appendCacheSize))
	if err != nil {
		_ = r.Close()
		store.Close()
		return nil, err
	}
	return &appendFixture{schema: schema, store: store, reg: reg, repo: r, cached: cached}, nil
}

func (f *appendFixture) close() {
	_ = f.repo.Close()
	_ = f.cached.Close()
	f.store.Close()
}

// warmUp runs n operations of each side outside the measurement, so that
// connections are open and statements prepared.
func warmUp(ctx context.Context, n, workers int, eskit, base op) error {
	if _, err := parallel(ctx, 0, n, workers, eskit); err != nil {
		return fmt.Errorf("warm-up: eskit: %w", err)
	}
	if _, err := parallel(ctx, 0, n, workers, base); err != nil {
		return fmt.Errorf("warm-up: baseline: %w", err)
	}
	return nil
}

// runAppend1 handles one-event commands through the repository (load,
// decide, append), each on a stream of its own, next to a plain INSERT of
// the same row in its own transaction, at each concurrency; then the same
// through a repository with a state cache (variant "cache"), which guesses
// that a stream it has not seen is new and so skips the load.
func runAppend1(ctx context.Context, e *env) ([]Result, error) {
	f, err := newAppendFixture(ctx, e, "bench_append1")
	if err != nil {
		return nil, err
	}
	defer f.close()
	var out []Result
	for _, cached := range []bool{false, true} {
		for _, c := range e.sizes.AppendConcurrency {
			r, err := runAppend1At(ctx, e, f, c, cached)
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
	}
	return out, nil
}

// runAppend1At runs append-1 with c clients, through the cached repository
// when cached is set.
func runAppend1At(ctx context.Context, e *env, f *appendFixture, c int, cached bool) (Result, error) {
	insert := plainInsert(f.schema)
	repo, variant, name := f.repo, "c="+strconv.Itoa(c), "c"+strconv.Itoa(c)
	if cached {
		repo, variant, name = f.cached, variant+" cache", name+"-cache"
	}
	n := e.sizes.Append1
	if c > 1 {
		n = e.sizes.Append1Parallel
	}
	eskit := func(prefix string) op {
		return func(ctx context.Context, _, i int) error {
			_, err := repo.Handle(ctx, prefix+strconv.Itoa(i), deposit{Amount: int64(i%1000 + 1)})
			return err
		}
	}
	base := func(prefix string) op {
		return func(ctx context.Context, _, i int) error {
			// The same row the repository writes: the event encoded
			// by the registry, version 1 of a new stream.
			row, err := encodeRow(f.reg, deposited{Amount: int64(i%1000 + 1), Currency: "EUR", Note: "benchmark"}, nil)
			if err != nil {
				return err
			}
			_, err = e.pool.Exec(ctx, insert, row.id, prefix+strconv.Itoa(i), int64(1), row.typ, row.data, row.metadata)
			return err
		}
	}
	if err := warmUp(ctx, min(n/10, 100)+c, c, eskit("warm-"+name+"-"), base("warm-"+name+"-")); err != nil {
		return Result{}, err
	}
	te, tb, err := alternate(ctx, e.mem, n, e.sizes.Rounds, c, c == 1, eskit("acct-"+name+"-"), base("acct-"+name+"-"))
	if err != nil {
		return Result{}, err
	}
	params := map[string]any{"variant": variant, "concurrency": c, "commands": n, "rounds": e.sizes.Rounds, "cache": cached}
	if cached {
		params["cache_size"] = appendCacheSize
	}
	if c == 1 {
		params["p50_ms_eskit"] = ms(percentile(sortedCopy(te.lat), 50))
		params["p50_ms_baseline"] = ms(percentile(sortedCopy(tb.lat), 50))
	}
	params["store"] = storeDefaults
	r := result("append-1", "commands/s", rate(n, te.total), rate(n, tb.total), params)
	bound := 0.9
	if cached && c > 1 {
		bound = 0.85
	}
	return r.withTarget(target{ratio: true, min: true, bound: bound}), nil
}

// runAppend100 handles commands that cause 100 events each through the
// repository, each on a new stream, next to a plain multi-row INSERT of the
// same rows.
func runAppend100(ctx context.Context, e *env) ([]Result, error) {
	f, err := newAppendFixture(ctx, e, "bench_append100")
	if err != nil {
		return nil, err
	}
	defer f.close()
	const per = 100
	insert := plainInsertMany(f.schema)
	eskit := func(prefix string) op {
		return func(ctx context.Context, _, i int) error {
			_, err := f.repo.Handle(ctx, prefix+strconv.Itoa(i), deposit{Amount: int64(i%1000 + 1), N: per})
			return err
		}
	}
	base := func(prefix string) op {
		return func(ctx context.Context, _, i int) error {
			ids, vs, ts, ds, mds := make([]uuid.UUID, per), make([]int64, per), make([]string, per), make([][]byte, per), make([][]byte, per)
			for j := range per {
				row, err := encodeRow(f.reg, deposited{Amount: int64(i%1000 + 1), Currency: "EUR", Note: "benchmark"}, nil)
				if err != nil {
					return err
				}
				ids[j], vs[j], ts[j], ds[j], mds[j] = row.id, int64(j+1), row.typ, row.data, row.metadata
			}
			_, err := e.pool.Exec(ctx, insert, prefix+strconv.Itoa(i), ids, vs, ts, ds, mds)
			return err
		}
	}
	n := e.sizes.Append100
	if err := warmUp(ctx, min(n/10, 20)+1, 1, eskit("warm-"), base("warm-")); err != nil {
		return nil, err
	}
	te, tb, err := alternate(ctx, e.mem, n, e.sizes.Rounds, 1, false, eskit("acct-"), base("acct-"))
	if err != nil {
		return nil, err
	}
	params := map[string]any{"appends": n, "events_per_append": per, "concurrency": 1, "rounds": e.sizes.Rounds, "store": storeDefaults}
	r := result("append-100", "events/s", rate(n*per, te.total), rate(n*per, tb.total), params)
	return []Result{r.withTarget(target{ratio: true, min: true, bound: 0.9})}, nil
}

// runImport bulk-imports batches of new streams with Store.Import, next to
// a plain CopyFrom of the same rows.
func runImport(ctx context.Context, e *env) ([]Result, error) {
	f, err := newAppendFixture(ctx, e, "bench_import")
	if err != nil {
		return nil, err
	}
	defer f.close()
	const perStream = 100
	batch := e.sizes.ImportBatch
	batches := max(1, e.sizes.Import/batch)
	total := batches * batch
	var te, tb time.Duration
	for k := range batches + 1 { // batch 0 warms up
		appends, err := streamBatch(f.reg, "imp-"+strconv.Itoa(k), batch, perStream)
		if err != nil {
			return nil, err
		}
		rows := make([][]any, 0, batch)
		for _, a := range appends {
			for j, ev := range a.Events {
				row, err := rowOf(ev)
				if err != nil {
					return nil, err
				}
				rows = append(rows, []any{int64(0), row.id, a.StreamID, int64(j + 1), row.typ, row.data, row.metadata})
			}
		}
		eskit := func() error { _, err := f.store.Import(ctx, appends); return err }
		base := func() error {
			return pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error { return copyRows(ctx, tx, f.schema, rows) })
		}
		if k == 0 {
			if err := eskit(); err != nil {
				return nil, fmt.Errorf("warm-up: eskit: %w", err)
			}
			if err := base(); err != nil {
				return nil, fmt.Errorf("warm-up: baseline: %w", err)
			}
			continue
		}
		first, second, fs, ss := eskit, base, sideEskit, sideBase
		if k%2 == 0 {
			first, second, fs, ss = base, eskit, sideBase, sideEskit
		}
		d1, err := timedSide(e.mem, fs, first)
		if err != nil {
			return nil, err
		}
		d2, err := timedSide(e.mem, ss, second)
		if err != nil {
			return nil, err
		}
		if fs == sideEskit {
			te, tb = te+d1, tb+d2
		} else {
			te, tb = te+d2, tb+d1
		}
	}
	params := map[string]any{"events": total, "events_per_import": batch, "events_per_stream": perStream}
	r := result("import", "events/s", rate(total, te), rate(total, tb), params)
	return []Result{r.withTarget(target{ratio: true, min: true, bound: 0.9})}, nil
}
