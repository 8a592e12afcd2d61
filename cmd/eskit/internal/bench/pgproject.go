package bench

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/projection"
)

// pgBalanceSQL writes a batch's deposits: the sum of each stream's
// amounts added to its balance (one multi-row upsert) and the deposits to
// the count, in the namespace's tables. The projection (through a
// Gatherer) and its baseline write the same.
func pgBalanceSQL(ns projection.Namespace) (balance, count string) {
	return `INSERT INTO ` + ns.Table("balance") + ` (stream, amount) SELECT * FROM unnest($1::text[], $2::bigint[])
			ON CONFLICT (stream) DO UPDATE SET amount = ` + ns.Table("balance") + `.amount + EXCLUDED.amount`,
		`UPDATE ` + ns.Table("deposits") + ` SET n = n + $1`
}

// pgSetup creates the balances tables in ns's schema.
func pgSetup(ctx context.Context, tx pgx.Tx, ns projection.Namespace) error {
	_, err := tx.Exec(ctx, `CREATE TABLE `+ns.Table("balance")+` (stream text PRIMARY KEY, amount bigint NOT NULL);
		CREATE TABLE `+ns.Table("deposits")+` (n bigint NOT NULL);
		INSERT INTO `+ns.Table("deposits")+` VALUES (0)`)
	return err
}

// sums gathers a batch's deposits per stream.
type sums struct {
	ns      projection.Namespace
	streams []string
	amounts []int64
	index   map[string]int
	n       int64
}

func (s *sums) add(stream string, amount int64) {
	i, ok := s.index[stream]
	if !ok {
		i = len(s.streams)
		s.index[stream] = i
		s.streams, s.amounts = append(s.streams, stream), append(s.amounts, 0)
	}
	s.amounts[i] += amount
	s.n++
}

// queue queues the batch's writes on b.
func (s *sums) queue(b *pgx.Batch) {
	balance, count := pgBalanceSQL(s.ns)
	b.Queue(balance, s.streams, s.amounts)
	b.Queue(count, s.n)
}

func (s *sums) Flush(ctx context.Context, tx pgx.Tx) error {
	b := &pgx.Batch{}
	s.queue(b)
	return tx.SendBatch(ctx, b).Close()
}

func newSums(ns projection.Namespace) *sums { return &sums{ns: ns, index: map[string]int{}} }

// pgBalances is the balances projection in PostgreSQL: it gathers each
// batch's deposits and writes them in one upsert.
func pgBalances(reg *eventstore.Registry) projection.Projection {
	return projection.New(projectionName, projection.Typed(reg,
		func(_ context.Context, b *projection.Batch, rec eventstore.Record, ev deposited) error {
			g := b.Gather("balances", func() projection.Gatherer { return newSums(b.Namespace()) }).(*sums)
			g.add(rec.StreamID, ev.Amount)
			return nil
		}), projection.Setup(pgSetup))
}

// runProjectRebuildPG measures Runner.Rebuild on the PostgreSQL target
// next to a hand-written projector that pages through the events table as
// the Redis case's baseline does (rawRebuild) and writes each page in one
// transaction: the same multi-row upsert of the page's sums per stream,
// the count, and an update of a checkpoint row.
func runProjectRebuildPG(ctx context.Context, e *env) ([]Result, error) {
	const schema = "bench_rebuild_pg"
	f, err := newProjectFixture(ctx, e, schema, e.sizes.Project)
	if err != nil {
		return nil, err
	}
	defer f.store.Close()
	pgt := projection.Postgres(e.pool, schema)
	r, err := projection.NewRunnerOn(pgt, f.store, []projection.Projection{pgBalances(f.reg)}, e.runnerOptions("rebuildpg")...)
	if err != nil {
		return nil, err
	}
	stop, err := startBuilt(ctx, r, f.head)
	if err != nil {
		return nil, err
	}
	defer func() { _ = stop() }()
	feed := feedQuery(schema)
	raw := func(round int) func() error {
		ns := projection.Namespace{Prefix: "rawpg:", Projection: projectionName, Version: int64(round + 1), Partitions: 1}
		return func() error {
			if err := pgRawSetup(ctx, e, ns); err != nil {
				return err
			}
			n, err := rawRebuild(ctx, e.pool, feed, projection.DefaultBatchSize, func(recs []eventstore.Record) error {
				return pgRawBatch(ctx, e, f.reg, ns, recs)
			})
			if err == nil && n != len(f.recs) {
				err = fmt.Errorf("baseline read %d records, want %d", n, len(f.recs))
			}
			if _, derr := e.pool.Exec(ctx, `DROP SCHEMA `+pgx.Identifier{ns.Schema()}.Sanitize()+` CASCADE`); err == nil {
				err = derr
			}
			return err
		}
	}
	if err := raw(0)(); err != nil {
		return nil, fmt.Errorf("warm-up: baseline: %w", err)
	}
	rounds := max(2, e.sizes.Rounds/2)
	var te, tb time.Duration
	for i := range rounds {
		d, err := timedSide(e.mem, sideEskit, func() error { return r.Rebuild(ctx, projectionName) })
		if err != nil {
			return nil, err
		}
		db, err := timedSide(e.mem, sideBase, raw(i+1))
		if err != nil {
			return nil, err
		}
		te, tb = te+d, tb+db
	}
	n := len(f.recs) * rounds
	params := map[string]any{"events": len(f.recs), "rounds": rounds, "batch": projection.DefaultBatchSize, "store": "postgres"}
	return []Result{result("project-rebuild-pg", "events/s", rate(n, te), rate(n, tb), params).
		withTarget(target{min: true, bound: 100_000})}, nil
}

// startBuilt runs r (one partition) until the returned function is
// called, once it leads and has applied the feed up to head.
func startBuilt(ctx context.Context, r *projection.Runner, head eventstore.Position) (stop func() error, err error) {
	stop = startRunner(ctx, r)
	if err := waitActive(ctx, r, projectionName, 1); err != nil {
		_ = stop()
		return nil, err
	}
	if err := waitFor(ctx, r, head); err != nil {
		_ = stop()
		return nil, err
	}
	return stop, nil
}

// pgRawSetup creates the baseline's schema: the projection's tables and a
// checkpoint row.
func pgRawSetup(ctx context.Context, e *env, ns projection.Namespace) error {
	return pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `CREATE SCHEMA `+pgx.Identifier{ns.Schema()}.Sanitize()); err != nil {
			return err
		}
		if err := pgSetup(ctx, tx, ns); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `CREATE TABLE `+ns.Table("checkpoint")+` (pos text NOT NULL); INSERT INTO `+ns.Table("checkpoint")+` VALUES ('')`)
		return err
	})
}

// pgRawBatch writes what the projection writes for recs in one
// transaction, with the checkpoint, as a hand-written projector would
// (sums per stream, one multi-row upsert); the payloads are decoded as the
// projection decodes them.
func pgRawBatch(ctx context.Context, e *env, reg *eventstore.Registry, ns projection.Namespace, recs []eventstore.Record) error {
	s := newSums(ns)
	for _, r := range recs {
		ev, err := decodeDeposited(reg, r)
		if err != nil {
			return err
		}
		s.add(r.StreamID, ev.Amount)
	}
	return pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
		batch := &pgx.Batch{}
		s.queue(batch)
		batch.Queue(`UPDATE `+ns.Table("checkpoint")+` SET pos = $1`, recs[len(recs)-1].Position.String())
		return tx.SendBatch(ctx, batch).Close()
	})
}

// runAppendInlinePG measures the cost of an inline projection: appends of
// one event each (one client) through pgstore's AppendTxRecords, the
// balances projection applied in the append's transaction by
// projection.Inline, and the commit — next to the same appends without
// the projection (AppendTx and the commit). The ratio is what the inline
// read model costs an append.
func runAppendInlinePG(ctx context.Context, e *env) ([]Result, error) {
	const schema = "bench_inline_pg"
	store, err := e.newStore(ctx, schema)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	reg, err := newRegistry()
	if err != nil {
		return nil, err
	}
	pgt := projection.Postgres(e.pool, schema, projection.SharedWithInline())
	// A runner builds the (empty) read model; the Inline then keeps it.
	r, err := projection.NewRunnerOn(pgt, store, []projection.Projection{pgBalancesPerRecord(reg)}, e.runnerOptions("inlinepg")...)
	if err != nil {
		return nil, err
	}
	head, err := store.Head(ctx)
	if err != nil {
		return nil, err
	}
	stop, err := startBuilt(ctx, r, head)
	if err != nil {
		return nil, err
	}
	defer func() { _ = stop() }()
	inline, err := projection.NewInline(pgt, "inlinepg", pgBalancesPerRecord(reg))
	if err != nil {
		return nil, err
	}
	appendOne := func(withInline bool) func(prefix string) op {
		return func(prefix string) op {
			return func(ctx context.Context, _, i int) error {
				ev, err := reg.Encode(deposited{Amount: int64(i%1000 + 1), Currency: "EUR", Note: "benchmark"}, nil)
				if err != nil {
					return err
				}
				a := eventstore.StreamAppend{StreamID: prefix + strconv.Itoa(i), Expected: eventstore.NoStream, Events: []eventstore.Event{ev}}
				return pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
					if !withInline {
						_, err := store.AppendTx(ctx, tx, a)
						return err
					}
					recs, _, err := store.AppendTxRecords(ctx, tx, a)
					if err != nil {
						return err
					}
					_, err = inline.Apply(ctx, tx, recs)
					return err
				})
			}
		}
	}
	n := e.sizes.Append1
	eskit, base := appendOne(true), appendOne(false)
	if err := warmUp(ctx, min(n/10, 100)+1, 1, eskit("warm-i-"), base("warm-p-")); err != nil {
		return nil, err
	}
	te, tb, err := alternate(ctx, e.mem, n, e.sizes.Rounds, 1, true, eskit("acct-i-"), base("acct-p-"))
	if err != nil {
		return nil, err
	}
	params := map[string]any{"appends": n, "concurrency": 1, "store": "postgres",
		"baseline":     "the same AppendTx without the projection",
		"p50_ms_eskit": ms(percentile(sortedCopy(te.lat), 50)), "p50_ms_baseline": ms(percentile(sortedCopy(tb.lat), 50))}
	res := result("append-inline-pg", "appends/s", rate(n, te.total), rate(n, tb.total), params)
	return []Result{res}, nil
}

// pgBalancesPerRecord is the balances projection writing each deposit at
// once (an inline apply has one record).
func pgBalancesPerRecord(reg *eventstore.Registry) projection.Projection {
	return projection.New(projectionName, projection.Typed(reg,
		func(_ context.Context, b *projection.Batch, rec eventstore.Record, ev deposited) error {
			balance, count := pgBalanceSQL(b.Namespace())
			b.Queue(balance, []string{rec.StreamID}, []int64{ev.Amount})
			b.Queue(count, 1)
			return nil
		}), projection.Setup(pgSetup))
}

// runProjectLivePG measures a live projection on the PostgreSQL target,
// fed from JetStream, next to a hand-written consumer of the same stream
// writing the same batched upserts and a checkpoint row (see projectLive).
func runProjectLivePG(ctx context.Context, e *env) ([]Result, error) {
	const schema = "bench_live_pg"
	setUp := map[string]bool{}
	on := projectOn{name: "project-live-pg", schema: schema, stream: "livepg", events: e.sizes.Project, partitions: 1,
		target:  projection.Postgres(e.pool, schema),
		project: pgBalances,
		rawBatch: func(ctx context.Context, reg *eventstore.Registry, ns projection.Namespace, recs []eventstore.Record) error {
			if !setUp[ns.Prefix] {
				if err := pgRawSetup(ctx, e, ns); err != nil {
					return err
				}
				setUp[ns.Prefix] = true
			}
			return pgRawBatch(ctx, e, reg, ns, recs)
		},
		clean: func(ctx context.Context, prefix string) error {
			ns := projection.Namespace{Prefix: prefix, Projection: projectionName, Version: 1}
			_, err := e.pool.Exec(ctx, `DELETE FROM `+pgx.Identifier{schema, "projection_state"}.Sanitize()+` WHERE starts_with(k, $1)`, prefix)
			if err == nil {
				_, err = e.pool.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{ns.Schema()}.Sanitize()+` CASCADE`)
			}
			return err
		},
		params: map[string]any{"store": "postgres"},
	}
	res, err := projectLive(ctx, e, on)
	if err != nil {
		return nil, err
	}
	return []Result{res.withTarget(target{ratio: true, min: true, bound: 0.8})}, nil
}
