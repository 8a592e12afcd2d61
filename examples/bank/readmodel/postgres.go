package readmodel

import (
	"context"
	"errors"
	"fmt"
	"math/big"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/examples/bank/domain"
	"github.com/eskit/eskit/projection"
)

// The read models in PostgreSQL (PostgresProjections): the same four
// projections, each writing tables of its namespace version's schema
// (projection.Namespace.Table), created by its Setup. Every row holds the
// partition that wrote it (part), so that a partition can be cleared
// alone. Times are timestamptz (the store's microseconds); money totals
// are numeric, exact at any size.
//
//	bank.accounts       accounts       one row per account
//	bank.transactions   histories      one row per account: the principal
//	                    transactions   one row per deposit or withdrawal
//	bank.transfers      transfers      one row per transfer
//	bank.totals.v2      counts         (part, kind, status) → n
//	                    currencies     each account's currency
//	                    money          (part, currency) → held, in flight,
//	                                   deposited, withdrawn
var pgTables = map[string][]string{
	Accounts: {`CREATE TABLE %s (
		id uuid PRIMARY KEY, part int NOT NULL, owner text NOT NULL, principal text NOT NULL,
		currency text NOT NULL, overdraft_limit bigint NOT NULL, balance bigint NOT NULL,
		in_flight bigint NOT NULL, status text NOT NULL, version bigint NOT NULL,
		opened_at timestamptz NOT NULL, updated_at timestamptz NOT NULL)`},
	Transactions: {`CREATE TABLE %s (account uuid PRIMARY KEY, part int NOT NULL, principal text NOT NULL)`,
		`CREATE TABLE %s (
		account uuid NOT NULL, version bigint NOT NULL, part int NOT NULL, kind text NOT NULL,
		amount bigint NOT NULL, balance bigint NOT NULL, transfer_id uuid, at timestamptz NOT NULL,
		position text NOT NULL, PRIMARY KEY (account, version))`},
	Transfers: {`CREATE TABLE %s (
		id uuid PRIMARY KEY, part int NOT NULL, from_account uuid NOT NULL, to_account uuid NOT NULL,
		amount bigint NOT NULL, currency text NOT NULL, principal text NOT NULL, status text NOT NULL,
		reason text NOT NULL DEFAULT '', version bigint NOT NULL, position text NOT NULL,
		requested_at timestamptz NOT NULL, updated_at timestamptz NOT NULL)`},
	Totals: {`CREATE TABLE %s (part int NOT NULL, kind text NOT NULL, status text NOT NULL,
		n bigint NOT NULL, PRIMARY KEY (part, kind, status))`,
		`CREATE TABLE %s (account uuid PRIMARY KEY, part int NOT NULL, currency text NOT NULL)`,
		`CREATE TABLE %s (part int NOT NULL, currency text NOT NULL, held numeric NOT NULL,
		in_flight numeric NOT NULL, deposited numeric NOT NULL, withdrawn numeric NOT NULL,
		PRIMARY KEY (part, currency))`},
}

// pgTableNames are the tables of each projection, in pgTables' order.
var pgTableNames = map[string][]string{
	Accounts:     {"accounts"},
	Transactions: {"histories", "transactions"},
	Transfers:    {"transfers"},
	Totals:       {"counts", "currencies", "money"},
}

// PostgresProjections returns the bank's projections for a PostgreSQL
// target (projection.Postgres), decoding events with reg. pool is the
// read models' database: side effects (OnTransferFinished) read the
// committed transfer from it.
func PostgresProjections(reg *eventstore.Registry, pool *pgxpool.Pool, opts ...Option) []projection.Projection {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	parts := projection.Partitions(max(o.partitions, 1))
	m := pgModels{pool: pool}
	proj := func(name string, apply projection.ApplyFunc) projection.Projection {
		return projection.New(name, apply, parts, projection.Setup(pgSetup(name)), projection.Clear(pgClear(name)))
	}
	return []projection.Projection{
		proj(Accounts, projection.Typed(reg, pgApplyAccount)),
		proj(Transactions, projection.Typed(reg, pgApplyTransaction)),
		proj(Transfers, projection.Typed(reg, o.pgApplyTransfer(m))),
		proj(Totals, projection.Typed(reg, pgApplyTotals)),
	}
}

func pgSetup(name string) func(ctx context.Context, tx pgx.Tx, ns projection.Namespace) error {
	return func(ctx context.Context, tx pgx.Tx, ns projection.Namespace) error {
		for i, stmt := range pgTables[name] {
			if _, err := tx.Exec(ctx, fmt.Sprintf(stmt, ns.Table(pgTableNames[name][i]))); err != nil {
				return fmt.Errorf("readmodel: create %s: %w", pgTableNames[name][i], err)
			}
		}
		return nil
	}
}

func pgClear(name string) func(ctx context.Context, tx pgx.Tx, ns projection.Namespace) error {
	return func(ctx context.Context, tx pgx.Tx, ns projection.Namespace) error {
		for _, t := range pgTableNames[name] {
			if _, err := tx.Exec(ctx, `DELETE FROM `+ns.Table(t)+` WHERE part = $1`, ns.Partition); err != nil {
				return fmt.Errorf("readmodel: clear %s: %w", t, err)
			}
		}
		return nil
	}
}

// pgApplyAccount keeps the accounts table: the row is written whole on
// the opening, and each later event sets what it changes.
func pgApplyAccount(_ context.Context, b *projection.Batch, rec eventstore.Record, ev domain.AccountEvent) error {
	id, err := accountID(rec)
	if err != nil {
		return err
	}
	t := b.Namespace().Table("accounts")
	update := func(set string, args ...any) {
		b.Queue(`UPDATE `+t+` SET version = $2, updated_at = $3`+set+` WHERE id = $1`,
			append([]any{id, rec.Version, rec.RecordedAt}, args...)...)
	}
	switch e := ev.(type) {
	case domain.AccountOpened:
		b.Queue(`INSERT INTO `+t+` (id, part, owner, principal, currency, overdraft_limit, balance, in_flight,
				status, version, opened_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, 0, 0, $7, $8, $9, $9)
			ON CONFLICT (id) DO UPDATE SET owner = EXCLUDED.owner, principal = EXCLUDED.principal,
				currency = EXCLUDED.currency, overdraft_limit = EXCLUDED.overdraft_limit, balance = 0,
				in_flight = 0, status = EXCLUDED.status, version = EXCLUDED.version,
				opened_at = EXCLUDED.opened_at, updated_at = EXCLUDED.updated_at`,
			id, b.Namespace().Partition, e.Owner, e.Principal, e.Currency, e.OverdraftLimit,
			string(domain.StatusOpen), rec.Version, rec.RecordedAt)
	case domain.Deposited:
		var back int64
		if e.Refund {
			back = e.Amount
		}
		update(`, balance = $4, in_flight = in_flight - $5`, e.Balance, back)
	case domain.Withdrawn:
		var out int64
		if e.TransferID != uuid.Nil {
			out = e.Amount
		}
		update(`, balance = $4, in_flight = in_flight + $5`, e.Balance, out)
	case domain.TransferSettled:
		update(`, in_flight = in_flight - $4`, e.Amount)
	case domain.AccountFrozen:
		update(`, status = $4`, string(domain.StatusFrozen))
	case domain.AccountUnfrozen:
		update(`, status = $4`, string(domain.StatusOpen))
	case domain.AccountClosed:
		update(`, status = $4`, string(domain.StatusClosed))
	default:
		update(``)
	}
	return nil
}

// pgApplyTransaction keeps each account's history: the histories row
// (its principal) from the opening on, and a transactions row per money
// movement, keyed by the account stream's version.
func pgApplyTransaction(_ context.Context, b *projection.Batch, rec eventstore.Record, ev domain.AccountEvent) error {
	id, err := accountID(rec)
	if err != nil {
		return err
	}
	part := b.Namespace().Partition
	if e, ok := ev.(domain.AccountOpened); ok {
		b.Queue(`INSERT INTO `+b.Namespace().Table("histories")+` (account, part, principal) VALUES ($1, $2, $3)
			ON CONFLICT (account) DO UPDATE SET principal = EXCLUDED.principal`, id, part, e.Principal)
		return nil
	}
	tx := transaction(rec, ev)
	if tx == nil {
		return nil
	}
	var transfer *uuid.UUID
	if tx.TransferID != uuid.Nil {
		transfer = &tx.TransferID
	}
	b.Queue(`INSERT INTO `+b.Namespace().Table("transactions")+`
			(account, version, part, kind, amount, balance, transfer_id, at, position)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		ON CONFLICT (account, version) DO UPDATE SET kind = EXCLUDED.kind, amount = EXCLUDED.amount,
			balance = EXCLUDED.balance, transfer_id = EXCLUDED.transfer_id, at = EXCLUDED.at,
			position = EXCLUDED.position`,
		id, tx.Version, part, tx.Kind, tx.Amount, tx.Balance, transfer, tx.At, tx.Position)
	return nil
}

// pgApplyTransfer keeps the transfers table: the requested event writes
// the row, the later ones move its status (a reason, once given, stays).
func (o options) pgApplyTransfer(m pgModels) func(context.Context, *projection.Batch, eventstore.Record, domain.TransferEvent) error {
	return func(_ context.Context, b *projection.Batch, rec eventstore.Record, ev domain.TransferEvent) error {
		id, err := transferID(rec)
		if err != nil {
			return err
		}
		status, reason, ok := transferMove(ev)
		if !ok {
			return projection.Permanent(fmt.Errorf("readmodel: unknown transfer event %T", ev))
		}
		ns := b.Namespace()
		t := ns.Table("transfers")
		if e, ok := ev.(domain.TransferRequested); ok {
			b.Queue(`INSERT INTO `+t+` (id, part, from_account, to_account, amount, currency, principal, status,
					version, position, requested_at, updated_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)
				ON CONFLICT (id) DO UPDATE SET from_account = EXCLUDED.from_account,
					to_account = EXCLUDED.to_account, amount = EXCLUDED.amount, currency = EXCLUDED.currency,
					principal = EXCLUDED.principal, status = EXCLUDED.status, version = EXCLUDED.version,
					position = EXCLUDED.position, requested_at = EXCLUDED.requested_at,
					updated_at = EXCLUDED.updated_at`,
				id, ns.Partition, e.From, e.To, e.Amount, e.Currency, e.Principal, string(status),
				rec.Version, rec.Position.String(), rec.RecordedAt)
		} else {
			b.Queue(`UPDATE `+t+` SET status = $2, reason = CASE WHEN $3 = '' THEN reason ELSE $3 END,
					version = $4, position = $5, updated_at = $6
				WHERE id = $1`, id, string(status), reason, rec.Version, rec.Position.String(), rec.RecordedAt)
		}
		if status.Final() && o.onTransferFinished != nil {
			fn := o.onTransferFinished
			b.AfterCommit(func(ctx context.Context) {
				if t, _, found, err := m.transfer(ctx, ns, id); err == nil && found {
					fn(ctx, t)
				}
			})
		}
		return nil
	}
}

// pgApplyTotals gathers a batch's counts and money changes (pgTotals),
// written in two statements when the batch commits.
func pgApplyTotals(_ context.Context, b *projection.Batch, rec eventstore.Record, ev any) error {
	g := b.Gather(Totals, func() projection.Gatherer { return newPGTotals(b.Namespace()) }).(*pgTotals)
	money := func(id uuid.UUID, changes ...change) { g.money(id, changes) }
	return totalsOf(rec, ev, g.count, g.currency, money)
}

// pgTotals is what a batch changes of the totals.
type pgTotals struct {
	ns     projection.Namespace
	counts map[[2]string]int64
	// currencies of the accounts opened in the batch.
	currencies map[uuid.UUID]string
	// deltas per account, in order of first change: held, in flight,
	// deposited, withdrawn.
	deltas map[uuid.UUID]*[4]big.Int
	order  []uuid.UUID
}

func newPGTotals(ns projection.Namespace) *pgTotals {
	return &pgTotals{ns: ns, counts: map[[2]string]int64{}, currencies: map[uuid.UUID]string{}, deltas: map[uuid.UUID]*[4]big.Int{}}
}

func (g *pgTotals) count(kind, status string, n int64) { g.counts[[2]string{kind, status}] += n }

func (g *pgTotals) currency(id uuid.UUID, cur string) { g.currencies[id] = cur }

var moneyField = map[string]int{fieldHeld: 0, fieldInFlight: 1, fieldDeposited: 2, fieldWithdrawn: 3}

func (g *pgTotals) money(id uuid.UUID, changes []change) {
	d := g.deltas[id]
	if d == nil {
		d = new([4]big.Int)
		g.deltas[id] = d
		g.order = append(g.order, id)
	}
	unit := big.NewInt(moneyUnit)
	for _, c := range changes {
		x := new(big.Int).Mul(big.NewInt(c.hi), unit)
		x.Add(x, big.NewInt(c.lo))
		f := &d[moneyField[c.field]]
		f.Add(f, x)
	}
}

// Flush writes the batch's totals: the counts, the new accounts'
// currencies, then the money changes, summed per currency (found through
// each account's currency; an account without one fails the batch, as a
// money event before its account's opening is a bug of the feed).
func (g *pgTotals) Flush(ctx context.Context, tx pgx.Tx) error {
	part := g.ns.Partition
	batch := &pgx.Batch{}
	if len(g.counts) > 0 {
		kinds, statuses, ns := make([]string, 0, len(g.counts)), make([]string, 0, len(g.counts)), make([]int64, 0, len(g.counts))
		for k, n := range g.counts {
			kinds, statuses, ns = append(kinds, k[0]), append(statuses, k[1]), append(ns, n)
		}
		t := g.ns.Table("counts")
		batch.Queue(`INSERT INTO `+t+` (part, kind, status, n)
			SELECT $1, k, s, n FROM unnest($2::text[], $3::text[], $4::bigint[]) AS u(k, s, n)
			ON CONFLICT (part, kind, status) DO UPDATE SET n = `+t+`.n + EXCLUDED.n`, part, kinds, statuses, ns)
	}
	if len(g.currencies) > 0 {
		ids, curs := make([]uuid.UUID, 0, len(g.currencies)), make([]string, 0, len(g.currencies))
		for id, c := range g.currencies {
			ids, curs = append(ids, id), append(curs, c)
		}
		batch.Queue(`INSERT INTO `+g.ns.Table("currencies")+` (account, part, currency)
			SELECT a, $1, c FROM unnest($2::uuid[], $3::text[]) AS u(a, c)
			ON CONFLICT (account) DO UPDATE SET currency = EXCLUDED.currency`, part, ids, curs)
	}
	var missing int64
	if len(g.order) > 0 {
		cols := [4][]string{}
		for _, id := range g.order {
			for i := range cols {
				cols[i] = append(cols[i], g.deltas[id][i].String())
			}
		}
		t := g.ns.Table("money")
		batch.Queue(`WITH d AS (
				SELECT a, h::numeric AS h, f::numeric AS f, dp::numeric AS dp, w::numeric AS w
				FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[]) AS u(a, h, f, dp, w)),
			j AS (SELECT c.currency, d.* FROM d JOIN `+g.ns.Table("currencies")+` c ON c.account = d.a),
			up AS (
				INSERT INTO `+t+` (part, currency, held, in_flight, deposited, withdrawn)
				SELECT $1, currency, sum(h), sum(f), sum(dp), sum(w) FROM j GROUP BY currency
				ON CONFLICT (part, currency) DO UPDATE SET held = `+t+`.held + EXCLUDED.held,
					in_flight = `+t+`.in_flight + EXCLUDED.in_flight,
					deposited = `+t+`.deposited + EXCLUDED.deposited,
					withdrawn = `+t+`.withdrawn + EXCLUDED.withdrawn
				RETURNING 1)
			SELECT (SELECT count(*) FROM d) - (SELECT count(*) FROM j) + 0 * (SELECT count(*) FROM up)`,
			part, g.order, cols[0], cols[1], cols[2], cols[3]).QueryRow(func(row pgx.Row) error {
			return row.Scan(&missing)
		})
	}
	if batch.Len() == 0 {
		return nil
	}
	if err := tx.SendBatch(ctx, batch).Close(); err != nil {
		return fmt.Errorf("readmodel: write the totals: %w", err)
	}
	if missing > 0 {
		return fmt.Errorf("readmodel: money of %d account(s) without a currency", missing)
	}
	return nil
}

// NewPostgresQueries returns the queries over the read models in
// PostgreSQL; reader finds each projection's active namespace (a reader
// on the runner's target and prefix: projection.NewReaderOn).
func NewPostgresQueries(pool *pgxpool.Pool, reader *projection.Reader) (*Queries, error) {
	if pool == nil || reader == nil {
		return nil, errors.New("readmodel: queries need a PostgreSQL pool and a projection reader")
	}
	return &Queries{models: pgModels{pool: pool}, reader: reader}, nil
}

// pgModels reads the read models in PostgreSQL.
type pgModels struct{ pool *pgxpool.Pool }

// noRows reports a missing row as not found, any other error as itself.
func noRows(err error) (bool, error) {
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

func (m pgModels) account(ctx context.Context, ns projection.Namespace, id uuid.UUID) (AccountSummary, string, bool, error) {
	a := AccountSummary{ID: id}
	var principal string
	err := m.pool.QueryRow(ctx, `SELECT owner, principal, currency, overdraft_limit, balance, in_flight, status,
			version, opened_at, updated_at FROM `+ns.Table("accounts")+` WHERE id = $1`, id).
		Scan(&a.Owner, &principal, &a.Currency, &a.OverdraftLimit, &a.Balance, &a.InFlight, &a.Status,
			&a.Version, &a.OpenedAt, &a.UpdatedAt)
	found, err := noRows(err)
	a.OpenedAt, a.UpdatedAt = a.OpenedAt.UTC(), a.UpdatedAt.UTC()
	return a, principal, found, err
}

func (m pgModels) history(ctx context.Context, ns projection.Namespace, id uuid.UUID, before int64, limit int) ([]Transaction, string, bool, error) {
	if before == 0 {
		before = math64
	}
	batch := &pgx.Batch{}
	var principal string
	found := false
	batch.Queue(`SELECT principal FROM `+ns.Table("histories")+` WHERE account = $1`, id).QueryRow(func(row pgx.Row) error {
		var err error
		found, err = noRows(row.Scan(&principal))
		return err
	})
	ts := make([]Transaction, 0, limit)
	batch.Queue(`SELECT version, kind, amount, balance, transfer_id, at, position FROM `+ns.Table("transactions")+`
		WHERE account = $1 AND version < $2 ORDER BY version DESC LIMIT $3`, id, before, limit).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var (
				t        Transaction
				transfer *uuid.UUID
			)
			if err := rows.Scan(&t.Version, &t.Kind, &t.Amount, &t.Balance, &transfer, &t.At, &t.Position); err != nil {
				return err
			}
			if transfer != nil {
				t.TransferID = *transfer
			}
			t.At = t.At.UTC()
			ts = append(ts, t)
		}
		return rows.Err()
	})
	if err := m.pool.SendBatch(ctx, batch).Close(); err != nil {
		return nil, "", false, err
	}
	return ts, principal, found, nil
}

// math64 is above every stream version.
const math64 = int64(^uint64(0) >> 1)

func (m pgModels) transfer(ctx context.Context, ns projection.Namespace, id uuid.UUID) (TransferStatus, string, bool, error) {
	t := TransferStatus{ID: id}
	var principal string
	err := m.pool.QueryRow(ctx, `SELECT from_account, to_account, amount, currency, principal, status, reason,
			version, position, requested_at, updated_at FROM `+ns.Table("transfers")+` WHERE id = $1`, id).
		Scan(&t.From, &t.To, &t.Amount, &t.Currency, &principal, &t.Status, &t.Reason,
			&t.Version, &t.Position, &t.RequestedAt, &t.UpdatedAt)
	found, err := noRows(err)
	t.RequestedAt, t.UpdatedAt = t.RequestedAt.UTC(), t.UpdatedAt.UTC()
	return t, principal, found, err
}

func (m pgModels) totals(ctx context.Context, ns projection.Namespace, s *Stats, sums moneySums) error {
	batch := &pgx.Batch{}
	batch.Queue(`SELECT kind, status, sum(n)::bigint FROM ` + ns.Table("counts") + ` GROUP BY kind, status`).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var (
				kind, status string
				n            int64
			)
			if err := rows.Scan(&kind, &status, &n); err != nil {
				return err
			}
			switch kind {
			case countAccounts:
				s.Accounts[status] += n
			case countTransfers:
				s.Transfers[status] += n
			}
		}
		return rows.Err()
	})
	batch.Queue(`SELECT currency, sum(held)::text, sum(in_flight)::text, sum(deposited)::text, sum(withdrawn)::text
		FROM ` + ns.Table("money") + ` GROUP BY currency`).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var cur string
			var vals [4]string
			if err := rows.Scan(&cur, &vals[0], &vals[1], &vals[2], &vals[3]); err != nil {
				return err
			}
			fields := map[string]*big.Int{}
			for f, i := range moneyField {
				n, ok := new(big.Int).SetString(vals[i], 10)
				if !ok {
					return fmt.Errorf("money %s %s = %q: not an integer", cur, f, vals[i])
				}
				fields[f] = n
			}
			sums[cur] = fields
		}
		return rows.Err()
	})
	return m.pool.SendBatch(ctx, batch).Close()
}
