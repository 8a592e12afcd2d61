package projection_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/projection"
)

// pgAccounts is the accounts projection of the Redis tests, kept in
// PostgreSQL: a balance per stream, a history per stream and a record
// count per partition.
type pgAccounts struct {
	name       string
	reg        *eventstore.Registry
	partitions int

	mu   sync.Mutex
	fail map[uuid.UUID]error
	// immediate makes Apply write with Tx().Exec instead of Queue;
	// gather makes it gather the count's increments (one write a batch).
	immediate, gather bool
	effects           map[uuid.UUID]int
}

func newPGAccounts(t testing.TB, name string) *pgAccounts {
	return &pgAccounts{name: name, reg: newRegistry(t), fail: map[uuid.UUID]error{}, effects: map[uuid.UUID]int{}}
}

func (a *pgAccounts) Name() string    { return a.name }
func (a *pgAccounts) Partitions() int { return max(a.partitions, 1) }

func (a *pgAccounts) Setup(ctx context.Context, tx pgx.Tx, ns projection.Namespace) error {
	_, err := tx.Exec(ctx, `
		CREATE TABLE `+ns.Table("balance")+` (stream text PRIMARY KEY, partition int NOT NULL, balance bigint NOT NULL);
		CREATE TABLE `+ns.Table("history")+` (stream text NOT NULL, version bigint NOT NULL, partition int NOT NULL, type text NOT NULL, PRIMARY KEY (stream, version));
		CREATE TABLE `+ns.Table("count")+` (partition int PRIMARY KEY, n bigint NOT NULL)`)
	return err
}

func (a *pgAccounts) Clear(ctx context.Context, tx pgx.Tx, ns projection.Namespace) error {
	for _, table := range []string{"balance", "history", "count"} {
		if _, err := tx.Exec(ctx, `DELETE FROM `+ns.Table(table)+` WHERE partition = $1`, ns.Partition); err != nil {
			return err
		}
	}
	return nil
}

func (a *pgAccounts) setFail(id uuid.UUID, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err == nil {
		delete(a.fail, id)
	} else {
		a.fail[id] = err
	}
}

func (a *pgAccounts) Apply(ctx context.Context, b *projection.Batch, rec eventstore.Record) error {
	a.mu.Lock()
	err, immediate, gather := a.fail[rec.ID], a.immediate, a.gather
	a.mu.Unlock()
	return projection.Typed(a.reg, func(ctx context.Context, b *projection.Batch, rec eventstore.Record, ev accountEvent) error {
		ns := b.Namespace()
		stmts := []struct {
			sql  string
			args []any
		}{
			{`INSERT INTO ` + ns.Table("balance") + ` (stream, partition, balance) VALUES ($1, $2, $3)
				ON CONFLICT (stream) DO UPDATE SET balance = ` + ns.Table("balance") + `.balance + EXCLUDED.balance`, []any{rec.StreamID, ns.Partition, ev.amount()}},
			{`INSERT INTO ` + ns.Table("history") + ` (stream, version, partition, type) VALUES ($1, $2, $3, $4)`, []any{rec.StreamID, rec.Version, ns.Partition, rec.Type}},
			{`INSERT INTO ` + ns.Table("count") + ` (partition, n) VALUES ($1, 1) ON CONFLICT (partition) DO UPDATE SET n = ` + ns.Table("count") + `.n + 1`, []any{ns.Partition}},
		}
		if gather {
			g := b.Gather("count", func() projection.Gatherer { return &countGatherer{ns: ns} }).(*countGatherer)
			g.n++
			stmts = stmts[:2]
		}
		for _, s := range stmts {
			if immediate {
				if _, err := b.Tx().Exec(ctx, s.sql, s.args...); err != nil {
					return err
				}
			} else {
				b.Queue(s.sql, s.args...)
			}
		}
		if err != nil {
			// After writing: the batch must undo this record's writes.
			return err
		}
		b.AfterCommit(func(context.Context) {
			a.mu.Lock()
			a.effects[rec.ID]++
			a.mu.Unlock()
		})
		return nil
	})(ctx, b, rec)
}

// countGatherer adds a batch's records to its partition's count in one
// statement.
type countGatherer struct {
	ns projection.Namespace
	n  int64
}

func (g *countGatherer) Flush(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `INSERT INTO `+g.ns.Table("count")+` (partition, n) VALUES ($1, $2)
		ON CONFLICT (partition) DO UPDATE SET n = `+g.ns.Table("count")+`.n + EXCLUDED.n`, g.ns.Partition, g.n)
	return err
}

// pgDump reads the read model of the active namespace in the form dump
// returns for the Redis projection.
func pgDump(t testing.TB, pool *pgxpool.Pool, ns projection.Namespace) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	var n int64
	require.NoError(t, pool.QueryRow(ctx, `SELECT coalesce(sum(n), 0) FROM `+ns.Table("count")).Scan(&n))
	if n == 0 {
		return out
	}
	out["count"] = strconv.FormatInt(n, 10)
	rows, err := pool.Query(ctx, `SELECT stream, balance FROM `+ns.Table("balance")+` ORDER BY stream`)
	require.NoError(t, err)
	var bal []string
	var s string
	var b int64
	_, err = pgx.ForEachRow(rows, []any{&s, &b}, func() error {
		bal = append(bal, s+"="+strconv.FormatInt(b, 10))
		return nil
	})
	require.NoError(t, err)
	slices.Sort(bal)
	out["balance"] = "hash:" + strings.Join(bal, ",")
	rows, err = pool.Query(ctx, `SELECT stream, version, type FROM `+ns.Table("history")+` ORDER BY stream, version`)
	require.NoError(t, err)
	hist := map[string][]string{}
	var v int64
	var typ string
	_, err = pgx.ForEachRow(rows, []any{&s, &v, &typ}, func() error {
		hist[s] = append(hist[s], strconv.FormatInt(v, 10)+":"+typ)
		return nil
	})
	require.NoError(t, err)
	for s, h := range hist {
		out["history:"+s] = "list:" + strings.Join(h, ",")
	}
	return out
}

// pgTarget returns a fresh database migrated for the PostgreSQL target.
func pgTarget(t testing.TB) (*pgxpool.Pool, projection.Target) {
	t.Helper()
	pool := testsvc.Pool(t)
	require.NoError(t, pgstore.Migrate(context.Background(), pool, pgSchema))
	return pool, projection.Postgres(pool, pgSchema)
}

func schemaExists(t testing.TB, pool *pgxpool.Pool, schema string) bool {
	t.Helper()
	var ok bool
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, schema).Scan(&ok))
	return ok
}

// The PostgreSQL target builds the read model from the feed and follows
// it, each batch's writes and checkpoint in one transaction; a blue/green
// rebuild writes a new schema while the old one serves, switches, and
// drops the old schema; a poison record is parked, later records of its
// stream wait behind it, and a retry applies them.
func TestPostgresTarget(t *testing.T) {
	for _, tc := range []struct {
		name              string
		partitions        int
		immediate, gather bool
	}{
		{"queued", 1, false, false},
		{"immediate", 1, true, false},
		{"gathered", 2, false, true},
		{"partitioned", 3, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			pool, target := pgTarget(t)
			store := newMemstore()
			acc := newPGAccounts(t, "accounts")
			acc.partitions, acc.immediate, acc.gather = tc.partitions, tc.immediate, tc.gather
			appendEvents(t, store, acc.reg, streamNames(6), 300)
			r, err := projection.NewRunnerOn(target, store, []projection.Projection{acc}, fastOpts(t, "pgt", projection.WithBatchSize(50))...)
			require.NoError(t, err)
			start(t, r)
			waitHead(t, r, "accounts", store)
			ns, err := r.Namespace(ctx, "accounts")
			require.NoError(t, err)
			require.Equal(t, expected(allRecords(t, store)), pgDump(t, pool, ns))

			// Live, then a poison record: parked with the one behind it.
			appendEvents(t, store, acc.reg, streamNames(6), 60)
			bad := newEvent(t, acc.reg, Deposited{Amount: 1000})
			acc.setFail(bad.ID, errors.New("boom"))
			_, err = store.Append(ctx, "acct-0", eventstore.Any, bad)
			require.NoError(t, err)
			badID := bad.ID
			behind := appendOne(t, store, acc.reg, "acct-0", Deposited{Amount: 1})
			waitHead(t, r, "accounts", store)
			parked, err := r.Reader().Parked(ctx, "accounts")
			require.NoError(t, err)
			require.Len(t, parked, 2)
			require.Equal(t, expected(allRecords(t, store), badID, behind.ID), pgDump(t, pool, ns))
			acc.mu.Lock()
			effects := acc.effects[badID]
			acc.mu.Unlock()
			require.Zero(t, effects, "a failed record's side effect fired")

			acc.setFail(badID, nil)
			res, err := r.RetryParked(ctx, "accounts")
			require.NoError(t, err)
			require.Equal(t, 2, res.Applied)
			require.Equal(t, expected(allRecords(t, store)), pgDump(t, pool, ns))

			// Blue/green rebuild.
			old := ns.Schema()
			require.NoError(t, r.Rebuild(ctx, "accounts"))
			ns2, err := r.Namespace(ctx, "accounts")
			require.NoError(t, err)
			require.Equal(t, ns.Version+1, ns2.Version)
			require.Equal(t, expected(allRecords(t, store)), pgDump(t, pool, ns2))
			eventually(t, 10*time.Second, "the old schema dropped", func() bool { return !schemaExists(t, pool, old) })

			st, err := r.Status(ctx, "accounts")
			require.NoError(t, err)
			require.True(t, st.Ready)
			require.Zero(t, st.Parked)
			require.Len(t, st.Parts, tc.partitions)
			for _, p := range st.Parts {
				require.NotEmpty(t, p.Owner)
				require.NotZero(t, p.LeaseToken)
			}
		})
	}
}

// An Inline applies the projection in the append's transaction: the read
// model shows the append the moment it commits (before any runner ran),
// a rolled-back append leaves nothing, and a runner sharing the target
// applies only what no Inline did — each record once, the read model the
// fold of the store and equal to a fresh rebuild.
func TestInlineProjection(t *testing.T) {
	ctx := context.Background()
	pool := testsvc.Pool(t)
	require.NoError(t, pgstore.Migrate(ctx, pool, pgSchema))
	store, err := pgstore.New(ctx, pool, pgstore.WithSchema(pgSchema))
	require.NoError(t, err)
	t.Cleanup(store.Close)
	target := projection.Postgres(pool, pgSchema, projection.SharedWithInline())
	acc := newPGAccounts(t, "accounts")
	acc.partitions = 2
	appendEvents(t, store, acc.reg, streamNames(4), 40)

	r, err := projection.NewRunnerOn(target, store, []projection.Projection{acc}, fastOpts(t, "inl")...)
	require.NoError(t, err)
	run := start(t, r)
	waitHead(t, r, "accounts", store)
	inline, err := projection.NewInline(target, "inl", acc)
	require.NoError(t, err)
	ns, err := r.Namespace(ctx, "accounts")
	require.NoError(t, err)

	appendInline := func(stream string, v any, commit bool) {
		t.Helper()
		ev, err := acc.reg.Encode(v, nil)
		require.NoError(t, err)
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		recs, _, err := store.AppendTxRecords(ctx, tx, eventstore.StreamAppend{StreamID: stream, Expected: eventstore.Any, Events: []eventstore.Event{ev}})
		require.NoError(t, err)
		after, err := inline.Apply(ctx, tx, recs)
		require.NoError(t, err)
		if !commit {
			require.NoError(t, tx.Rollback(ctx))
			return
		}
		require.NoError(t, tx.Commit(ctx))
		store.Notify()
		after(ctx)
	}
	// With the runner stopped, the read model still shows every append
	// made through the Inline, at once.
	run.stop()
	for i := range 20 {
		appendInline(streamNames(4)[i%4], Deposited{Amount: int64(i + 1)}, true)
		require.Equal(t, expected(allRecords(t, store)), pgDump(t, pool, ns), "after inline append %d", i)
	}
	appendInline("acct-0", Deposited{Amount: 999}, false)
	require.Equal(t, expected(allRecords(t, store)), pgDump(t, pool, ns), "a rolled-back append left something")

	// A runner shares the namespace with concurrent inline appends and
	// appends the Inline does not see.
	r2, err := projection.NewRunnerOn(target, store, []projection.Projection{acc}, fastOpts(t, "inl")...)
	require.NoError(t, err)
	start(t, r2)
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() {
			for i := range 30 {
				appendInline(streamNames(4)[(w+i)%4], Deposited{Amount: 1}, true)
			}
		})
	}
	appendEvents(t, store, acc.reg, streamNames(4), 30)
	wg.Wait()
	waitHead(t, r2, "accounts", store)
	require.Equal(t, expected(allRecords(t, store)), pgDump(t, pool, ns))
	for _, rec := range allRecords(t, store)[40:] {
		acc.mu.Lock()
		n := acc.effects[rec.ID]
		acc.mu.Unlock()
		require.Equal(t, 1, n, "side effects of %s v%d", rec.StreamID, rec.Version)
	}
	require.NoError(t, r2.Rebuild(ctx, "accounts"))
	ns2, err := r2.Namespace(ctx, "accounts")
	require.NoError(t, err)
	require.Equal(t, expected(allRecords(t, store)), pgDump(t, pool, ns2))
	// After the switch the Inline writes the new namespace.
	appendInline("acct-1", Deposited{Amount: 5}, true)
	require.Equal(t, expected(allRecords(t, store)), pgDump(t, pool, ns2))
}

// Two deployments (key prefixes) in one database keep projections of the
// same name apart: their read models, bookkeeping and leases.
func TestPostgresTargetPrefixes(t *testing.T) {
	pool, target := pgTarget(t)
	store := newMemstore()
	a, b := newPGAccounts(t, "accounts"), newPGAccounts(t, "accounts")
	appendEvents(t, store, a.reg, streamNames(3), 60)
	ra, err := projection.NewRunnerOn(target, store, []projection.Projection{a}, fastOpts(t, "one")...)
	require.NoError(t, err)
	rb, err := projection.NewRunnerOn(target, store, []projection.Projection{b}, fastOpts(t, "two")...)
	require.NoError(t, err)
	start(t, ra)
	start(t, rb)
	for _, r := range []*projection.Runner{ra, rb} {
		waitHead(t, r, "accounts", store)
		require.True(t, r.Active("accounts"))
		ns, err := r.Namespace(context.Background(), "accounts")
		require.NoError(t, err)
		require.Equal(t, expected(allRecords(t, store)), pgDump(t, pool, ns))
	}
	nsA, _ := ra.Namespace(context.Background(), "accounts")
	nsB, _ := rb.Namespace(context.Background(), "accounts")
	require.NotEqual(t, nsA.Schema(), nsB.Schema())
}
