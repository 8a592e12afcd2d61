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

// Queries answers the bank's queries from the read models.
type Queries struct {
	rdb    redis.UniversalClient
	reader *projection.Reader
}

// NewQueries returns the queries over rdb; reader finds each projection's
// active namespace (it must use the runner's key prefix).
func NewQueries(rdb redis.UniversalClient, reader *projection.Reader) (*Queries, error) {
	if rdb == nil || reader == nil {
		return nil, errors.New("readmodel: queries need a Redis client and a projection reader")
	}
	return &Queries{rdb: rdb, reader: reader}, nil
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

// Account answers GetAccount.
func (q *Queries) Account(ctx context.Context, g GetAccount) (AccountSummary, error) {
	key, err := q.reader.StreamKey(ctx, Accounts, domain.AccountStream(g.ID), "account", g.ID.String())
	if err != nil {
		return AccountSummary{}, fmt.Errorf("readmodel: %w", err)
	}
	vals, err := q.rdb.HGetAll(ctx, key).Result()
	if err != nil {
		return AccountSummary{}, fmt.Errorf("readmodel: read account %s: %w", g.ID, err)
	}
	if len(vals) == 0 || vals["principal"] != g.Principal {
		return AccountSummary{}, fmt.Errorf("%w: %s", domain.ErrAccountNotFound, g.ID)
	}
	h := &fields{m: vals}
	a := AccountSummary{
		ID: h.uuid("id"), Owner: vals["owner"], Currency: vals["currency"], Status: vals["status"],
		Balance: h.int("balance"), OverdraftLimit: h.int("overdraft_limit"), InFlight: h.int("in_flight"),
		Version: h.int("version"), OpenedAt: h.time("opened_at"), UpdatedAt: h.time("updated_at"),
	}
	if h.err != nil {
		return AccountSummary{}, fmt.Errorf("readmodel: account %s: %w", g.ID, h.err)
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
	upper := "+inf"
	if l.Cursor != "" {
		v, err := strconv.ParseInt(l.Cursor, 10, 64)
		if err != nil || v < 1 {
			return TransactionPage{}, &domain.ValidationError{Field: "cursor", Reason: fmt.Sprintf("%s is not a cursor of this list", domain.Excerpt(l.Cursor))}
		}
		upper = "(" + strconv.FormatInt(v, 10)
	}
	ns, err := q.reader.Namespace(ctx, Transactions)
	if err != nil {
		return TransactionPage{}, fmt.Errorf("readmodel: %w", err)
	}
	ns = ns.ForStream(domain.AccountStream(l.AccountID))
	id := l.AccountID.String()
	var (
		principal *redis.StringCmd
		members   *redis.StringSliceCmd
	)
	_, err = q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		principal = p.Get(ctx, ns.Key("opened", id))
		members = p.ZRevRangeByScore(ctx, ns.Key("history", id), &redis.ZRangeBy{Max: upper, Min: "-inf", Count: int64(limit) + 1})
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return TransactionPage{}, fmt.Errorf("readmodel: read the history of %s: %w", id, err)
	}
	if owner, err := principal.Result(); err != nil || owner != l.Principal {
		return TransactionPage{}, fmt.Errorf("%w: %s", domain.ErrAccountNotFound, id)
	}
	page := TransactionPage{AccountID: l.AccountID, Transactions: make([]Transaction, 0, limit)}
	for i, m := range members.Val() {
		if i == limit {
			page.NextCursor = strconv.FormatInt(page.Transactions[limit-1].Version, 10)
			break
		}
		var t Transaction
		if err := json.Unmarshal([]byte(m), &t); err != nil {
			return TransactionPage{}, fmt.Errorf("readmodel: decode a transaction of %s: %w", id, err)
		}
		page.Transactions = append(page.Transactions, t)
	}
	return page, nil
}

// Transfer answers GetTransfer.
func (q *Queries) Transfer(ctx context.Context, g GetTransfer) (TransferStatus, error) {
	key, err := q.reader.StreamKey(ctx, Transfers, domain.TransferStream(g.ID), "transfer", g.ID.String())
	if err != nil {
		return TransferStatus{}, fmt.Errorf("readmodel: %w", err)
	}
	vals, err := q.rdb.HGetAll(ctx, key).Result()
	if err != nil {
		return TransferStatus{}, fmt.Errorf("readmodel: read transfer %s: %w", g.ID, err)
	}
	if len(vals) == 0 || vals["principal"] != g.Principal {
		return TransferStatus{}, fmt.Errorf("%w: %s", domain.ErrTransferNotFound, g.ID)
	}
	t, err := transferFromHash(vals)
	if err != nil {
		return TransferStatus{}, fmt.Errorf("readmodel: transfer %s: %w", g.ID, err)
	}
	return t, nil
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

// Stats answers GetStats. Each partition of the totals projection holds
// the totals of its streams; the answer is their sum.
func (q *Queries) Stats(ctx context.Context, _ GetStats) (Stats, error) {
	ns, err := q.reader.Namespace(ctx, Totals)
	if err != nil {
		return Stats{}, fmt.Errorf("readmodel: %w", err)
	}
	parts := ns.All()
	accounts := make([]*redis.MapStringStringCmd, len(parts))
	transfers := make([]*redis.MapStringStringCmd, len(parts))
	money := make([]*redis.MapStringStringCmd, len(parts))
	_, err = q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, part := range parts {
			accounts[i] = p.HGetAll(ctx, part.Key("accounts"))
			transfers[i] = p.HGetAll(ctx, part.Key("transfers"))
			money[i] = p.HGetAll(ctx, part.Key("money"))
		}
		return nil
	})
	if err != nil {
		return Stats{}, fmt.Errorf("readmodel: read the totals: %w", err)
	}
	s := Stats{Accounts: map[string]int64{"total": 0}, Transfers: map[string]int64{"total": 0}}
	sums := moneySums{}
	for i := range parts {
		if err := addCounts(s.Accounts, accounts[i].Val()); err != nil {
			return Stats{}, err
		}
		if err := addCounts(s.Transfers, transfers[i].Val()); err != nil {
			return Stats{}, err
		}
		if err := sums.add(money[i].Val()); err != nil {
			return Stats{}, err
		}
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
