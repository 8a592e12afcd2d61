package pgstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/lease"
)

// Leases is a lease.Store on the leases table of an eskit PostgreSQL
// schema (created by the event store's migrations, Migrate):
//
//	<schema>.leases (name text PRIMARY KEY, holder text NOT NULL,
//	    token bigint NOT NULL, expires_at timestamptz NOT NULL,
//	    acquired_at timestamptz NOT NULL, renewed_at timestamptz NOT NULL)
//
// Every operation is one statement whose times come from the server's
// clock_timestamp(), so expiry never depends on the clients' clocks. A
// lease's row stays after release and expiry: Acquire is one
// INSERT ... ON CONFLICT DO UPDATE ... WHERE expired, which sets
// token = token + 1, so tokens strictly increase per name and are never
// reused. Renew and Release are UPDATEs conditional on name, token and
// holder and on the lease being live.
//
// Guarded writes in the same database check the lease in their own
// transaction: Check (or the GuardSQL predicate in the write's statement)
// takes FOR SHARE on the lease's row, so that a takeover, which updates
// the row, waits until the guarded transaction has committed or rolled
// back, and a transaction that checks after a takeover is refused.
// Store.Leases returns the one of a store's schema.
type Leases struct {
	pool    *pgxpool.Pool
	table   string
	acquire string
	holder  string
	renew   string
	release string
	current string
	why     string
	check   string
}

var _ lease.Store = (*Leases)(nil)

// Leases returns the lease store of the store's schema.
func (s *Store) Leases() *Leases { return NewLeases(s.pool, s.schema) }

// NewLeases returns a lease.Store on schema's leases table.
func NewLeases(pool *pgxpool.Pool, schema string) *Leases {
	table := pgx.Identifier{schema, "leases"}.Sanitize()
	return &Leases{
		pool:  pool,
		table: table,
		// One statement that takes an expired lease (UPDATE, which locks
		// only a row its WHERE accepts, so a refused standby neither waits
		// for the holder's guarded transactions nor writes) or creates a
		// new one (INSERT ... DO NOTHING, which locks nothing either). A
		// token is above the previous one and at least the server's time
		// in microseconds, so tokens keep rising even if the row is lost
		// (a restore, a recreated schema) while a deposed holder still runs.
		acquire: `WITH n AS (SELECT clock_timestamp() AS t),
upd AS (
    UPDATE ` + table + ` AS l
    SET holder = $2, token = greatest(l.token + 1, (extract(epoch FROM n.t) * 1000000)::bigint),
        expires_at = n.t + $3::bigint * interval '1 microsecond', acquired_at = n.t, renewed_at = n.t
    FROM n WHERE l.name = $1 AND l.expires_at <= n.t
    RETURNING l.token, l.expires_at),
ins AS (
    INSERT INTO ` + table + ` (name, holder, token, expires_at, acquired_at, renewed_at)
    SELECT $1, $2, (extract(epoch FROM n.t) * 1000000)::bigint, n.t + $3::bigint * interval '1 microsecond', n.t, n.t
    FROM n WHERE NOT EXISTS (SELECT 1 FROM ` + table + ` WHERE name = $1)
    ON CONFLICT (name) DO NOTHING
    RETURNING token, expires_at)
SELECT token, expires_at FROM upd UNION ALL SELECT token, expires_at FROM ins`,
		holder: `SELECT holder, token, expires_at, (extract(epoch FROM expires_at - clock_timestamp()) * 1000000)::bigint
FROM ` + table + ` WHERE name = $1 AND expires_at > clock_timestamp()`,
		renew: `UPDATE ` + table + ` AS l SET expires_at = n.t + $4::bigint * interval '1 microsecond', renewed_at = n.t
FROM (SELECT clock_timestamp() AS t) n
WHERE l.name = $1 AND l.token = $2 AND l.holder = $3 AND l.expires_at > n.t
RETURNING l.expires_at`,
		release: `UPDATE ` + table + ` AS l SET expires_at = n.t, renewed_at = n.t
FROM (SELECT clock_timestamp() AS t) n
WHERE l.name = $1 AND l.token = $2 AND l.holder = $3 AND l.expires_at > n.t`,
		current: `SELECT holder, token, expires_at FROM ` + table + ` WHERE name = $1 AND expires_at > clock_timestamp()`,
		why:     `SELECT holder, token, expires_at > clock_timestamp() FROM ` + table + ` WHERE name = $1`,
		// The timeout is the lease's remaining time, in ms, set only when
		// the lease is live.
		check: `SELECT holder, token, live, CASE WHEN live THEN set_config('idle_in_transaction_session_timeout',
    greatest(ceil(extract(epoch FROM expires_at - now) * 1000), 1)::bigint::text, true) END
FROM (SELECT holder, token, expires_at, clock_timestamp() AS now, expires_at > clock_timestamp() AS live
      FROM ` + table + ` WHERE name = $1 FOR SHARE) l`,
	}
}

// Acquire implements lease.Store.
func (p *Leases) Acquire(ctx context.Context, name, holder string, ttl time.Duration) (lease.Lease, error) {
	if err := lease.ValidateAcquire(name, holder, ttl); err != nil {
		return lease.Lease{}, err
	}
	// The lease found live may expire before it is read back; then the
	// acquisition is tried again.
	for range 3 {
		l := lease.Lease{Name: name, Holder: holder}
		var token int64
		err := p.pool.QueryRow(ctx, p.acquire, name, holder, ttl.Microseconds()).Scan(&token, &l.Expires)
		if err == nil {
			l.Token = uint64(token)
			return l, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return lease.Lease{}, fmt.Errorf("pgstore: acquire lease %q: %w", name, err)
		}
		cur := lease.Lease{Name: name}
		var remaining int64
		err = p.pool.QueryRow(ctx, p.holder, name).Scan(&cur.Holder, &token, &cur.Expires, &remaining)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return lease.Lease{}, fmt.Errorf("pgstore: acquire lease %q: read its holder: %w", name, err)
		}
		cur.Token = uint64(token)
		return lease.Lease{}, &lease.HeldError{Current: cur, Remaining: time.Duration(max(remaining, 0)) * time.Microsecond}
	}
	return lease.Lease{}, fmt.Errorf("pgstore: acquire lease %q: it kept expiring between refusal and read-back", name)
}

// token returns l's token as a bigint, or false when it is beyond any
// token the table can hold (so never issued).
func token(l lease.Lease) (int64, bool) {
	if l.Token > math.MaxInt64 {
		return 0, false
	}
	return int64(l.Token), true
}

// Renew implements lease.Store.
func (p *Leases) Renew(ctx context.Context, l lease.Lease, ttl time.Duration) (lease.Lease, error) {
	if err := lease.ValidateLease(l); err != nil {
		return lease.Lease{}, err
	}
	if err := lease.ValidateTTL(ttl); err != nil {
		return lease.Lease{}, err
	}
	tok, ok := token(l)
	if !ok {
		return lease.Lease{}, lease.Lost(l, "the store never issued this token")
	}
	var exp time.Time
	err := p.pool.QueryRow(ctx, p.renew, l.Name, tok, l.Holder, ttl.Microseconds()).Scan(&exp)
	if errors.Is(err, pgx.ErrNoRows) {
		return lease.Lease{}, lease.Lost(l, p.whyNot(ctx, l))
	}
	if err != nil {
		return lease.Lease{}, fmt.Errorf("pgstore: renew %s: %w", l, err)
	}
	l.Expires = exp
	return l, nil
}

// Release implements lease.Store.
func (p *Leases) Release(ctx context.Context, l lease.Lease) error {
	if err := lease.ValidateLease(l); err != nil {
		return err
	}
	tok, ok := token(l)
	if !ok {
		return lease.Lost(l, "the store never issued this token")
	}
	tag, err := p.pool.Exec(ctx, p.release, l.Name, tok, l.Holder)
	if err != nil {
		return fmt.Errorf("pgstore: release %s: %w", l, err)
	}
	if tag.RowsAffected() == 0 {
		return lease.Lost(l, p.whyNot(ctx, l))
	}
	return nil
}

// Current implements lease.Store.
func (p *Leases) Current(ctx context.Context, name string) (lease.Lease, bool, error) {
	if err := lease.ValidateName(name); err != nil {
		return lease.Lease{}, false, err
	}
	l := lease.Lease{Name: name}
	var tok int64
	err := p.pool.QueryRow(ctx, p.current, name).Scan(&l.Holder, &tok, &l.Expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return lease.Lease{}, false, nil
	}
	if err != nil {
		return lease.Lease{}, false, fmt.Errorf("pgstore: read lease %q: %w", name, err)
	}
	l.Token = uint64(tok)
	return l, true, nil
}

// Check is the fencing check of a guarded write in the caller's
// transaction tx: it takes FOR SHARE on the lease's row and returns nil
// when l is the live lease of its name (same token and holder, not
// expired by the server's clock), and an error matching lease.ErrFenced
// (and lease.ErrLost) otherwise; the caller then rolls back. The row lock
// lasts until tx ends: a takeover (and a renewal) of the lease waits for
// the guarded transaction, so nothing it writes can commit after another
// holder took over. Keep guarded transactions much shorter than the TTL.
//
// So that a holder that freezes inside the transaction (SIGSTOP, a pause:
// its connection looks alive) cannot keep the row locked, and the takeover
// waiting, for ever, Check also sets idle_in_transaction_session_timeout,
// for the rest of tx, to the lease's remaining time: the server ends such
// a session, rolling its transaction back, by the time the lease expires.
//
// Call it first in tx: in a REPEATABLE READ or SERIALIZABLE transaction
// whose snapshot predates the lease's last renewal, FOR SHARE fails with
// a serialization error. tx may write another schema's tables, but must be
// on the database of the lease table.
func (p *Leases) Check(ctx context.Context, tx pgx.Tx, l lease.Lease) error {
	if err := lease.ValidateLease(l); err != nil {
		return err
	}
	var holder string
	var tok int64
	var live bool
	var timeout *string
	err := tx.QueryRow(ctx, p.check, l.Name).Scan(&holder, &tok, &live, &timeout)
	if errors.Is(err, pgx.ErrNoRows) {
		return lease.Fenced(l, "the lease was never acquired")
	}
	if err != nil {
		return fmt.Errorf("pgstore: check %s: %w", l, err)
	}
	if why := whyNot(l, holder, tok, live); why != "" {
		return lease.Fenced(l, why)
	}
	return nil
}

// GuardSQL returns a boolean SQL predicate that is true only while the
// lease whose name and token are the statement's parameters $nameParam
// (text) and $tokenParam (bigint) is live, taking FOR SHARE on its row
// like Check; put it in a guarded write's WHERE clause:
//
//	UPDATE app.outbox_state SET pos = $3
//	WHERE name = $1 AND <leases.GuardSQL(1, 2)>
//
// A guarded statement that affects no row was fenced off (or found no row
// of its own): Check tells which.
func (p *Leases) GuardSQL(nameParam, tokenParam int) string {
	return fmt.Sprintf(`EXISTS (SELECT 1 FROM %s WHERE name = $%d::text AND token = $%d::bigint AND expires_at > clock_timestamp() FOR SHARE)`,
		p.table, nameParam, tokenParam)
}

// Table returns the quoted name of the lease table ("eskit"."leases").
func (p *Leases) Table() string { return p.table }

// whyNot says why l is not live, for the error of a failed renewal or
// release (the statement's own answer gives no reason).
func (p *Leases) whyNot(ctx context.Context, l lease.Lease) string {
	var holder string
	var tok int64
	var live bool
	err := p.pool.QueryRow(ctx, p.why, l.Name).Scan(&holder, &tok, &live)
	if errors.Is(err, pgx.ErrNoRows) {
		return "the lease was never acquired"
	}
	if err != nil {
		return "not live (reading the lease failed: " + err.Error() + ")"
	}
	if why := whyNot(l, holder, tok, live); why != "" {
		return why
	}
	return "not live when the statement ran"
}

func whyNot(l lease.Lease, holder string, tok int64, live bool) string {
	switch {
	case uint64(tok) < l.Token:
		return "the store never issued this token"
	case uint64(tok) > l.Token:
		return fmt.Sprintf("taken over by %q (token %d)", holder, tok)
	case holder != l.Holder:
		return fmt.Sprintf("the token belongs to %q", holder)
	case !live:
		return "expired or released"
	}
	return ""
}
