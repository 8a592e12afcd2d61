package readmodel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/examples/bank/domain"
	"github.com/eskit/eskit/projection"
	"github.com/eskit/eskit/querybus"
)

// Paging of ListTransactions.
const (
	DefaultPageSize = 20
	MaxPageSize     = 100
)

// GetAccount asks for the summary of an account (an AccountSummary) on
// behalf of Principal. It fails with domain.ErrAccountNotFound when the
// read model has no such account, or when the account is another
// principal's.
type GetAccount struct {
	ID        uuid.UUID
	Principal string
}

// ListTransactions asks for a page of an account's history, newest first
// (a TransactionPage). Limit is the page size (DefaultPageSize when zero,
// at most MaxPageSize); Cursor is the NextCursor of the previous page ("":
// the newest transactions). Like GetAccount, it finds only Principal's
// accounts.
type ListTransactions struct {
	AccountID uuid.UUID
	Limit     int
	Cursor    string
	Principal string
}

// GetTransfer asks for the status of a transfer (a TransferStatus) on
// behalf of Principal. It fails with domain.ErrTransferNotFound when the
// read model has no such transfer, or when another principal requested
// it.
type GetTransfer struct {
	ID        uuid.UUID
	Principal string
}

// GetStats asks for the bank's totals (a Stats).
type GetStats struct{}

// AccountSummary is an account as the bank.accounts read model holds it.
// Amounts are in minor units of Currency.
type AccountSummary struct {
	ID             uuid.UUID `json:"id"`
	Owner          string    `json:"owner"`
	Currency       string    `json:"currency"`
	Balance        int64     `json:"balance"`
	OverdraftLimit int64     `json:"overdraft_limit"`
	// InFlight is the money of outgoing transfers that left the account
	// but has not reached its target or come back yet.
	InFlight int64  `json:"in_flight"`
	Status   string `json:"status"`
	// Version is the account stream's version the summary reflects.
	Version   int64     `json:"version"`
	OpenedAt  time.Time `json:"opened_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Transaction is one money movement of an account.
type Transaction struct {
	// Version is the account stream's version of the event.
	Version int64 `json:"version"`
	// Kind is deposit, withdrawal, transfer_out, transfer_in or refund.
	Kind string `json:"kind"`
	// Amount is signed: positive into the account, negative out of it.
	Amount int64 `json:"amount"`
	// Balance is the balance after the movement.
	Balance    int64     `json:"balance"`
	TransferID uuid.UUID `json:"transfer_id,omitzero"`
	At         time.Time `json:"at"`
	// Position is the event's feed position.
	Position string `json:"position"`
}

// TransactionPage is a page of an account's history, newest first.
// NextCursor fetches the next (older) page; it is empty on the last page.
type TransactionPage struct {
	AccountID    uuid.UUID     `json:"account_id"`
	Transactions []Transaction `json:"transactions"`
	NextCursor   string        `json:"next_cursor,omitempty"`
}

// TransferStatus is a transfer as the bank.transfers read model holds it.
type TransferStatus struct {
	ID       uuid.UUID `json:"id"`
	From     uuid.UUID `json:"from"`
	To       uuid.UUID `json:"to"`
	Amount   int64     `json:"amount"`
	Currency string    `json:"currency"`
	// Status is requested, debited, completed, rejected, credit_failed or
	// refunded.
	Status string `json:"status"`
	// Reason is the error code of a rejection or failed credit.
	Reason  string `json:"reason,omitempty"`
	Version int64  `json:"version"`
	// Position is the feed position of the transfer's latest event. The
	// transfer process records each step after carrying it out, so once
	// Status is debited (or later), a read of the accounts with
	// Eskit-Min-Position at Position shows the debit, and once Status is
	// final, all the transfer did to both accounts.
	Position    string    `json:"position"`
	RequestedAt time.Time `json:"requested_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// Final reports whether the transfer is over.
func (t TransferStatus) Final() bool { return domain.TransferStatus(t.Status).Final() }

// Stats are the bank's totals.
type Stats struct {
	// Accounts counts accounts by status, and in all ("total").
	Accounts map[string]int64 `json:"accounts"`
	// Transfers counts transfers by status, and in all ("total").
	Transfers map[string]int64 `json:"transfers"`
	// Money holds the totals of each currency.
	Money map[string]Money `json:"money"`
}

// Money is what the bank holds of one currency, in its minor units:
// exact integers of any size (a total over many accounts and a long
// history exceeds an int64), JSON numbers with all their digits.
// Held + InFlight == Deposited - Withdrawn, exactly.
type Money struct {
	// Held is the sum of the accounts' balances.
	Held Amount `json:"held"`
	// InFlight is the money of transfers between debit and credit (or
	// refund).
	InFlight Amount `json:"in_flight"`
	// Deposited and Withdrawn are the totals of deposits and withdrawals
	// (transfers excluded).
	Deposited Amount `json:"deposited"`
	Withdrawn Amount `json:"withdrawn"`
}

// Queries answers the bank's queries from the read models, in Redis
// (NewQueries) or PostgreSQL (NewPostgresQueries): the answers are the
// same.
type Queries struct {
	models models
	reader *projection.Reader
}

// models reads the read models of one target. The principal a model
// answers to is returned with it; found is false when there is none.
type models interface {
	account(ctx context.Context, ns projection.Namespace, id uuid.UUID) (a AccountSummary, principal string, found bool, err error)
	// history returns up to limit transactions of the account, newest
	// first, of versions below before (none when before is 0).
	history(ctx context.Context, ns projection.Namespace, id uuid.UUID, before int64, limit int) (ts []Transaction, principal string, found bool, err error)
	transfer(ctx context.Context, ns projection.Namespace, id uuid.UUID) (t TransferStatus, principal string, found bool, err error)
	// totals adds every partition's counts and money to s and sums.
	totals(ctx context.Context, ns projection.Namespace, s *Stats, sums moneySums) error
}

// NewQueries returns the queries over the read models in Redis; reader
// finds each projection's active namespace (it must use the runner's key
// prefix).
func NewQueries(rdb redis.UniversalClient, reader *projection.Reader) (*Queries, error) {
	if rdb == nil || reader == nil {
		return nil, errors.New("readmodel: queries need a Redis client and a projection reader")
	}
	return &Queries{models: redisModels{rdb: rdb}, reader: reader}, nil
}

// Register registers the bank's query handlers on bus, each reading from
// its projection (querybus.ReadsFrom), so WithMinPosition waits for it.
func Register(bus *querybus.Bus, q *Queries) error {
	return errors.Join(
		querybus.Register(bus, q.Account, querybus.ReadsFrom(Accounts)),
		querybus.Register(bus, q.Transactions, querybus.ReadsFrom(Transactions)),
		querybus.Register(bus, q.Transfer, querybus.ReadsFrom(Transfers)),
		querybus.Register(bus, q.Stats, querybus.ReadsFrom(Totals)),
	)
}

// namespace returns the active namespace of a projection, for the given
// stream's partition ("" for any).
func (q *Queries) namespace(ctx context.Context, name, streamID string) (projection.Namespace, error) {
	ns, err := q.reader.Namespace(ctx, name)
	if err != nil {
		return ns, fmt.Errorf("readmodel: %w", err)
	}
	if streamID != "" {
		ns = ns.ForStream(streamID)
	}
	return ns, nil
}

// Account answers GetAccount.
func (q *Queries) Account(ctx context.Context, g GetAccount) (AccountSummary, error) {
	ns, err := q.namespace(ctx, Accounts, domain.AccountStream(g.ID))
	if err != nil {
		return AccountSummary{}, err
	}
	a, principal, found, err := q.models.account(ctx, ns, g.ID)
	switch {
	case err != nil:
		return AccountSummary{}, fmt.Errorf("readmodel: account %s: %w", g.ID, err)
	case !found || principal != g.Principal:
		return AccountSummary{}, fmt.Errorf("%w: %s", domain.ErrAccountNotFound, g.ID)
	}
	return a, nil
}

// Transactions answers ListTransactions.
func (q *Queries) Transactions(ctx context.Context, l ListTransactions) (TransactionPage, error) {
	limit := l.Limit
	switch {
	case limit == 0:
		limit = DefaultPageSize
	case limit < 0 || limit > MaxPageSize:
		return TransactionPage{}, &domain.ValidationError{Field: "limit", Reason: fmt.Sprintf("%d is not between 1 and %d", l.Limit, MaxPageSize)}
	}
	var before int64
	if l.Cursor != "" {
		v, err := strconv.ParseInt(l.Cursor, 10, 64)
		if err != nil || v < 1 {
			return TransactionPage{}, &domain.ValidationError{Field: "cursor", Reason: fmt.Sprintf("%s is not a cursor of this list", domain.Excerpt(l.Cursor))}
		}
		before = v
	}
	ns, err := q.namespace(ctx, Transactions, domain.AccountStream(l.AccountID))
	if err != nil {
		return TransactionPage{}, err
	}
	ts, principal, found, err := q.models.history(ctx, ns, l.AccountID, before, limit+1)
	switch {
	case err != nil:
		return TransactionPage{}, fmt.Errorf("readmodel: the history of %s: %w", l.AccountID, err)
	case !found || principal != l.Principal:
		return TransactionPage{}, fmt.Errorf("%w: %s", domain.ErrAccountNotFound, l.AccountID)
	}
	page := TransactionPage{AccountID: l.AccountID, Transactions: ts}
	if len(ts) > limit {
		page.Transactions = ts[:limit]
		page.NextCursor = strconv.FormatInt(ts[limit-1].Version, 10)
	}
	return page, nil
}

// Transfer answers GetTransfer.
func (q *Queries) Transfer(ctx context.Context, g GetTransfer) (TransferStatus, error) {
	ns, err := q.namespace(ctx, Transfers, domain.TransferStream(g.ID))
	if err != nil {
		return TransferStatus{}, err
	}
	t, principal, found, err := q.models.transfer(ctx, ns, g.ID)
	switch {
	case err != nil:
		return TransferStatus{}, fmt.Errorf("readmodel: transfer %s: %w", g.ID, err)
	case !found || principal != g.Principal:
		return TransferStatus{}, fmt.Errorf("%w: %s", domain.ErrTransferNotFound, g.ID)
	}
	return t, nil
}

// Stats answers GetStats. Each partition of the totals projection holds
// the totals of its streams; the answer is their sum.
func (q *Queries) Stats(ctx context.Context, _ GetStats) (Stats, error) {
	ns, err := q.namespace(ctx, Totals, "")
	if err != nil {
		return Stats{}, err
	}
	s := Stats{Accounts: map[string]int64{"total": 0}, Transfers: map[string]int64{"total": 0}}
	sums := moneySums{}
	if err := q.models.totals(ctx, ns, &s, sums); err != nil {
		return Stats{}, fmt.Errorf("readmodel: the totals: %w", err)
	}
	s.Money = sums.money()
	for _, c := range []map[string]int64{s.Accounts, s.Transfers} {
		for k, n := range c {
			if n == 0 && k != "total" {
				delete(c, k)
			}
		}
	}
	return s, nil
}

// redisModels reads the read models in Redis.
type redisModels struct{ rdb redis.UniversalClient }

func (m redisModels) account(ctx context.Context, ns projection.Namespace, id uuid.UUID) (AccountSummary, string, bool, error) {
	vals, err := m.rdb.HGetAll(ctx, ns.Key("account", id.String())).Result()
	if err != nil || len(vals) == 0 {
		return AccountSummary{}, "", false, err
	}
	h := &fields{m: vals}
	a := AccountSummary{
		ID: h.uuid("id"), Owner: vals["owner"], Currency: vals["currency"], Status: vals["status"],
		Balance: h.int("balance"), OverdraftLimit: h.int("overdraft_limit"), InFlight: h.int("in_flight"),
		Version: h.int("version"), OpenedAt: h.time("opened_at"), UpdatedAt: h.time("updated_at"),
	}
	if h.err != nil {
		return AccountSummary{}, "", false, h.err
	}
	return a, vals["principal"], true, nil
}

func (m redisModels) history(ctx context.Context, ns projection.Namespace, id uuid.UUID, before int64, limit int) ([]Transaction, string, bool, error) {
	upper := "+inf"
	if before > 0 {
		upper = "(" + strconv.FormatInt(before, 10)
	}
	var (
		principal *redis.StringCmd
		members   *redis.StringSliceCmd
	)
	_, err := m.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		principal = p.Get(ctx, ns.Key("opened", id.String()))
		members = p.ZRevRangeByScore(ctx, ns.Key("history", id.String()), &redis.ZRangeBy{Max: upper, Min: "-inf", Count: int64(limit)})
		return nil
	})
	if errors.Is(principal.Err(), redis.Nil) {
		return nil, "", false, nil
	}
	if err != nil {
		return nil, "", false, err
	}
	ts := make([]Transaction, 0, len(members.Val()))
	for _, m := range members.Val() {
		var t Transaction
		if err := json.Unmarshal([]byte(m), &t); err != nil {
			return nil, "", false, fmt.Errorf("decode a transaction: %w", err)
		}
		ts = append(ts, t)
	}
	return ts, principal.Val(), true, nil
}

func (m redisModels) transfer(ctx context.Context, ns projection.Namespace, id uuid.UUID) (TransferStatus, string, bool, error) {
	vals, err := m.rdb.HGetAll(ctx, ns.Key("transfer", id.String())).Result()
	if err != nil || len(vals) == 0 {
		return TransferStatus{}, "", false, err
	}
	t, err := transferFromHash(vals)
	if err != nil {
		return TransferStatus{}, "", false, err
	}
	return t, vals["principal"], true, nil
}

func transferFromHash(vals map[string]string) (TransferStatus, error) {
	h := &fields{m: vals}
	t := TransferStatus{
		ID: h.uuid("id"), From: h.uuid("from"), To: h.uuid("to"), Amount: h.int("amount"),
		Currency: vals["currency"], Status: vals["status"], Reason: vals["reason"], Version: h.int("version"),
		Position:    vals["position"],
		RequestedAt: h.time("requested_at"), UpdatedAt: h.time("updated_at"),
	}
	return t, h.err
}

func (m redisModels) totals(ctx context.Context, ns projection.Namespace, s *Stats, sums moneySums) error {
	parts := ns.All()
	accounts := make([]*redis.MapStringStringCmd, len(parts))
	transfers := make([]*redis.MapStringStringCmd, len(parts))
	money := make([]*redis.MapStringStringCmd, len(parts))
	_, err := m.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, part := range parts {
			accounts[i] = p.HGetAll(ctx, part.Key("accounts"))
			transfers[i] = p.HGetAll(ctx, part.Key("transfers"))
			money[i] = p.HGetAll(ctx, part.Key("money"))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := range parts {
		if err := addCounts(s.Accounts, accounts[i].Val()); err != nil {
			return err
		}
		if err := addCounts(s.Transfers, transfers[i].Val()); err != nil {
			return err
		}
		if err := sums.add(money[i].Val()); err != nil {
			return err
		}
	}
	return nil
}

// addCounts adds a hash of counters to sum.
func addCounts(sum map[string]int64, vals map[string]string) error {
	for k, v := range vals {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("readmodel: totals counter %s = %q: %w", k, v, err)
		}
		sum[k] += n
	}
	return nil
}

// fields parses the fields of a read-model hash, keeping the first error.
type fields struct {
	m   map[string]string
	err error
}

func (f *fields) int(name string) int64 {
	v, ok := f.m[name]
	if !ok {
		return 0
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil && f.err == nil {
		f.err = fmt.Errorf("field %s: %w", name, err)
	}
	return n
}

func (f *fields) uuid(name string) uuid.UUID {
	id, err := uuid.Parse(f.m[name])
	if err != nil && f.err == nil {
		f.err = fmt.Errorf("field %s: %w", name, err)
	}
	return id
}

func (f *fields) time(name string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, f.m[name])
	if err != nil && f.err == nil {
		f.err = fmt.Errorf("field %s: %w", name, err)
	}
	return t
}
