package pgstore_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/internal/require"

	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/eventstore/pgstore/pgtest"
	"github.com/eskit/eskit/lease"
	"github.com/eskit/eskit/lease/leasetest"
)

// The PostgreSQL lease store keeps the lease.Store contract, on a schema of
// its own and on a store's.
func TestLeases(t *testing.T) {
	pool := pgtest.Pool(t)
	const schema = "eskit_lease"
	require.NoError(t, pgstore.Migrate(t.Context(), pool, schema))
	shared := pgstore.NewLeases(pool, schema)
	leasetest.Run(t, func(t *testing.T) lease.Store { return shared })
	t.Run("StoreLeases", func(t *testing.T) {
		st, err := pgstore.New(t.Context(), pgtest.Pool(t), pgstore.WithAutoMigrate())
		require.NoError(t, err)
		t.Cleanup(st.Close)
		leasetest.Run(t, func(t *testing.T) lease.Store { return st.Leases() })
	})
}

// newLeases returns the lease store of a migrated schema on a fresh
// database, and its pool.
func newLeases(t *testing.T) (*pgstore.Leases, *pgxpool.Pool) {
	t.Helper()
	pool := pgtest.Pool(t)
	require.NoError(t, pgstore.Migrate(t.Context(), pool, "eskit"))
	_, err := pool.Exec(t.Context(), `CREATE TABLE app_writes (token bigint NOT NULL, n int NOT NULL)`)
	require.NoError(t, err)
	return pgstore.NewLeases(pool, "eskit"), pool
}

// guardedWrite inserts (token, n) into app_writes in a transaction that
// checks l with Leases.Check first.
func guardedWrite(ctx context.Context, leases *pgstore.Leases, pool *pgxpool.Pool, l lease.Lease, n int) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := leases.Check(ctx, tx, l); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO app_writes (token, n) VALUES ($1, $2)`, int64(l.Token), n)
		return err
	})
}

func countWrites(t *testing.T, pool *pgxpool.Pool, token uint64) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT count(*) FROM app_writes WHERE token = $1`, int64(token)).Scan(&n))
	return n
}

// Check fences guarded transactions: a deposed holder's is refused, and a
// takeover waits until a guarded transaction in flight has ended.
func TestLeasesCheck(t *testing.T) {
	ctx := t.Context()
	leases, pool := newLeases(t)
	const ttl = 300 * time.Millisecond
	a, err := leases.Acquire(ctx, "job", "a", ttl)
	require.NoError(t, err)
	require.NoError(t, guardedWrite(ctx, leases, pool, a, 1))

	// A guarded transaction in flight outlasts the lease; the takeover
	// waits for it.
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	require.NoError(t, leases.Check(ctx, tx, a))
	_, err = tx.Exec(ctx, `INSERT INTO app_writes (token, n) VALUES ($1, 2)`, int64(a.Token))
	require.NoError(t, err)
	type result struct {
		l   lease.Lease
		err error
		at  time.Time
	}
	took := make(chan result, 1)
	go func() {
		for {
			l, err := leases.Acquire(ctx, "job", "b", time.Minute)
			if errors.Is(err, lease.ErrHeld) {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			took <- result{l, err, time.Now()}
			return
		}
	}()
	// Busy (not idle) in the transaction until well past the expiry.
	_, err = tx.Exec(ctx, `SELECT pg_sleep($1::float8)`, (ttl + 300*time.Millisecond).Seconds())
	require.NoError(t, err)
	select {
	case r := <-took:
		t.Fatalf("took over (%+v, %v) while a guarded transaction of the old lease was open", r.l, r.err)
	default:
	}
	committed := time.Now()
	require.NoError(t, tx.Commit(ctx))
	r := <-took
	require.NoError(t, r.err)
	require.True(t, r.at.After(committed), "takeover before the guarded commit")
	require.True(t, r.l.Token > a.Token)
	require.Equal(t, 2, countWrites(t, pool, a.Token))

	// From now on the deposed holder's guarded writes are refused.
	err = guardedWrite(ctx, leases, pool, a, 3)
	require.True(t, errors.Is(err, lease.ErrFenced), err)
	require.True(t, errors.Is(err, lease.ErrLost), err)
	require.True(t, strings.Contains(err.Error(), `taken over by "b"`), err)
	require.Equal(t, 2, countWrites(t, pool, a.Token))
	require.NoError(t, guardedWrite(ctx, leases, pool, r.l, 4))
	require.Equal(t, 1, countWrites(t, pool, r.l.Token))

	// The one-statement form.
	guarded := `INSERT INTO app_writes (token, n) SELECT $2, 5 WHERE ` + leases.GuardSQL(1, 2)
	tag, err := pool.Exec(ctx, guarded, "job", int64(a.Token))
	require.NoError(t, err)
	require.Equal(t, int64(0), tag.RowsAffected())
	tag, err = pool.Exec(ctx, guarded, "job", int64(r.l.Token))
	require.NoError(t, err)
	require.Equal(t, int64(1), tag.RowsAffected())

	// Check refuses a lease never acquired, and an expired one nobody took.
	err = guardedWrite(ctx, leases, pool, lease.Lease{Name: "never", Holder: "a", Token: 1}, 6)
	require.True(t, errors.Is(err, lease.ErrFenced), err)
	c, err := leases.Acquire(ctx, "short", "c", 50*time.Millisecond)
	require.NoError(t, err)
	time.Sleep(100 * time.Millisecond)
	err = guardedWrite(ctx, leases, pool, c, 7)
	require.True(t, errors.Is(err, lease.ErrFenced), err)
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM app_writes WHERE n IN (6, 7)`).Scan(&n))
	require.Equal(t, 0, n)
}

// A holder that freezes inside a guarded transaction (its connection stays
// open, the row stays locked) does not keep the takeover waiting past its
// lease: the server ends its idle session.
func TestLeasesCheckEndsFrozenTransaction(t *testing.T) {
	ctx := t.Context()
	leases, pool := newLeases(t)
	const ttl = 500 * time.Millisecond
	a, err := leases.Acquire(ctx, "job", "a", ttl)
	require.NoError(t, err)
	acquired := time.Now()
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	require.NoError(t, leases.Check(ctx, tx, a))
	_, err = tx.Exec(ctx, `INSERT INTO app_writes (token, n) VALUES ($1, 1)`, int64(a.Token))
	require.NoError(t, err)
	// The holder is frozen: it sends nothing more. A standby tries.
	var b lease.Lease
	for {
		b, err = leases.Acquire(ctx, "job", "b", time.Minute)
		if err == nil {
			break
		}
		require.True(t, errors.Is(err, lease.ErrHeld), err)
		require.True(t, time.Since(acquired) < 5*ttl, "no takeover within 5 ttls")
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(acquired)
	require.True(t, took < ttl+500*time.Millisecond, took)
	require.True(t, b.Token > a.Token)
	// The frozen transaction was rolled back: its write never happened.
	require.Error(t, tx.Commit(ctx))
	require.Equal(t, 0, countWrites(t, pool, a.Token))
}

// A schema created before leases existed upgrades: the pending migration
// adds the table and keeps what is there.
func TestLeasesMigrationUpgradesSchema(t *testing.T) {
	ctx := t.Context()
	pool := pgtest.Pool(t)
	const schema = "old"
	v1, err := os.ReadFile("migrations/0001_init.sql")
	require.NoError(t, err)
	sql := strings.NewReplacer(`{{schema}}`, `"`+schema+`"`, `{{schema_literal}}`, `'`+schema+`'`).Replace(string(v1))
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for _, stmt := range []string{
			`CREATE SCHEMA "old"`,
			`CREATE TABLE "old".schema_migrations (version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
			sql,
			`INSERT INTO "old".schema_migrations (version, name) VALUES (1, 'init')`,
			`INSERT INTO "old".checkpoints (name, pos_tx, pos_seq) VALUES ('relay', 7, 8)`,
		} {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	})
	require.NoError(t, err)
	st, err := pgstore.MigrationStatus(ctx, pool, schema)
	require.NoError(t, err)
	require.Equal(t, 1, len(st.Applied))
	require.True(t, len(st.Pending) >= 1)
	require.Equal(t, 2, st.Pending[0].Version)
	require.Equal(t, "leases", st.Pending[0].Name)
	_, err = pgstore.New(ctx, pool, pgstore.WithSchema(schema))
	require.Error(t, err) // a pending migration, and no auto-migrate

	// Two processes upgrading at once.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Go(func() { errs[i] = pgstore.Migrate(ctx, pool, schema) })
	}
	wg.Wait()
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	st, err = pgstore.MigrationStatus(ctx, pool, schema)
	require.NoError(t, err)
	require.True(t, st.UpToDate())
	var tx, seq int64
	require.NoError(t, pool.QueryRow(ctx, `SELECT pos_tx, pos_seq FROM "old".checkpoints WHERE name = 'relay'`).Scan(&tx, &seq))
	require.Equal(t, int64(7), tx)
	require.Equal(t, int64(8), seq)
	s, err := pgstore.New(ctx, pool, pgstore.WithSchema(schema))
	require.NoError(t, err)
	defer s.Close()
	before := uint64(time.Now().Add(-time.Minute).UnixMicro())
	l, err := s.Leases().Acquire(ctx, "job", "a", time.Second)
	require.NoError(t, err)
	require.Greater(t, l.Token, before, "a first token is at least the server's time in µs")
}

// A standby refused while the lease is live neither waits for the
// holder's guarded transaction (which holds the lease row FOR SHARE) nor
// writes the row.
func TestLeaseRefusalDoesNotWaitForGuardedWrites(t *testing.T) {
	ctx := t.Context()
	pool := pgtest.Pool(t)
	s, err := pgstore.New(ctx, pool, pgstore.WithSchema("refusal"), pgstore.WithAutoMigrate())
	require.NoError(t, err)
	defer s.Close()
	leases := s.Leases()
	held, err := leases.Acquire(ctx, "job", "leader", time.Minute)
	require.NoError(t, err)
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	require.NoError(t, leases.Check(ctx, tx, held))
	xmax := func() string {
		var x string
		require.NoError(t, pool.QueryRow(ctx, `SELECT xmax::text FROM refusal.leases WHERE name = 'job'`).Scan(&x))
		return x
	}
	locked := xmax() // the guarded transaction's share lock

	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err = leases.Acquire(actx, "job", "standby", time.Minute)
	var he *lease.HeldError
	require.ErrorAs(t, err, &he)
	require.Less(t, time.Since(start), time.Second, "the refusal does not queue behind the guarded transaction")
	require.Equal(t, held.Token, he.Current.Token)
	require.Equal(t, locked, xmax(), "the refused acquisition neither locked nor wrote the row")
}

// Store errors are not lease errors: a missing table is reported as it is.
func TestLeasesWithoutTable(t *testing.T) {
	leases := pgstore.NewLeases(pgtest.Pool(t), "missing")
	_, err := leases.Acquire(t.Context(), "job", "a", time.Second)
	require.Error(t, err)
	require.False(t, errors.Is(err, lease.ErrHeld) || errors.Is(err, lease.ErrLost), err)
	require.True(t, strings.Contains(err.Error(), "leases"), err)
}
