// Package readmodel is the sample bank's read side: four projections that
// keep Redis read models up to date from the bank's events, and the
// queries that read them through a querybus.
//
//	projection          read model                                 query
//	bank.accounts       one hash per account: owner, currency,     GetAccount
//	                    balance, status, version, money in flight
//	bank.transactions   one sorted set per account: its deposits   ListTransactions
//	                    and withdrawals by version, newest first
//	bank.transfers      one hash per transfer: its status           GetTransfer
//	bank.totals.v2      counts of accounts and transfers by status, GetStats
//	                    and money per currency, exact at any size
//
// Every projection is built with projection.New and projection.Typed, and
// writes only keys of its batch's namespace (projection.Batch.Key), so the
// projection runner can rebuild it blue/green. Queries find the active
// namespace through a projection.Reader, and are registered with
// querybus.ReadsFrom, so a caller can ask to read its own writes
// (querybus.WithMinPosition).
package readmodel

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/examples/bank/domain"
	"github.com/eskit/eskit/projection"
)

// Projection names. They are part of every key of the read models, so a
// read model whose layout changes incompatibly takes a new name (a ".vN"
// suffix): a runner builds it from the store as on a first start, while
// the model under the old name is left as it was (delete its keys once no
// process of the old version reads it).
const (
	Accounts     = "bank.accounts"
	Transactions = "bank.transactions"
	Transfers    = "bank.transfers"
	// Totals is at v2: each money total is two fields, a low and a high
	// part (see totals.go), where v1 kept one int64 that could overflow.
	Totals = "bank.totals.v2"
)

// Names lists every projection of the bank.
var Names = []string{Accounts, Transactions, Transfers, Totals}

// Transaction kinds, as the history shows them.
const (
	KindDeposit     = "deposit"
	KindWithdrawal  = "withdrawal"
	KindTransferOut = "transfer_out"
	KindTransferIn  = "transfer_in"
	KindRefund      = "refund"
)

// Option configures the projections.
type Option func(*options)

type options struct {
	onTransferFinished func(ctx context.Context, t TransferStatus)
	partitions         int
}

// WithPartitions applies every projection in n partitions (1 by default):
// runners in several processes share them. Every read model but the totals
// is keyed by its stream, and the totals are summed over the partitions at
// read time, so the queries answer the same for any n.
func WithPartitions(n int) Option { return func(o *options) { o.partitions = n } }

// OnTransferFinished sets a side effect run when a transfer reaches a final
// status (completed, rejected or refunded): say, an e-mail to the owner. It
// runs after the read model has committed, and never while a projection is
// replayed (a rebuild, or the first build), so a rebuild sends nothing
// twice (see projection.Batch.AfterCommit).
func OnTransferFinished(fn func(ctx context.Context, t TransferStatus)) Option {
	return func(o *options) { o.onTransferFinished = fn }
}

// LogTransfersFinished is an OnTransferFinished side effect that logs.
func LogTransfersFinished(logger *slog.Logger) Option {
	if logger == nil {
		logger = slog.Default()
	}
	return OnTransferFinished(func(_ context.Context, t TransferStatus) {
		logger.Info("bank: transfer finished", "transfer", t.ID, "status", t.Status, "reason", t.Reason,
			"amount", t.Amount, "currency", t.Currency)
	})
}

// Projections returns the bank's projections, decoding events with reg (a
// registry holding the bank's events: see domain.Register).
func Projections(reg *eventstore.Registry, opts ...Option) []projection.Projection {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	parts := projection.Partitions(max(o.partitions, 1))
	return []projection.Projection{
		projection.New(Accounts, projection.Typed(reg, applyAccount), parts),
		projection.New(Transactions, projection.Typed(reg, applyTransaction), parts),
		projection.New(Transfers, projection.Typed(reg, o.applyTransfer), parts),
		projection.New(Totals, projection.Typed(reg, applyTotals), parts),
	}
}

// at formats a record's time as stored: RFC 3339 with nanoseconds, UTC.
// Read models take times from the records, never from the clock, so a
// rebuild produces the same values.
func at(rec eventstore.Record) string { return rec.RecordedAt.UTC().Format(time.RFC3339Nano) }

func i64(n int64) string { return strconv.FormatInt(n, 10) }

// accountID returns the account of an account stream's record; a record of
// another stream is a bug of the registry, and is parked.
func accountID(rec eventstore.Record) (uuid.UUID, error) {
	id, ok := domain.ParseAccountStream(rec.StreamID)
	if !ok {
		return uuid.Nil, projection.Permanent(fmt.Errorf("readmodel: account event %s in stream %q", rec.Type, rec.StreamID))
	}
	return id, nil
}

func transferID(rec eventstore.Record) (uuid.UUID, error) {
	id, ok := domain.ParseTransferStream(rec.StreamID)
	if !ok {
		return uuid.Nil, projection.Permanent(fmt.Errorf("readmodel: transfer event %s in stream %q", rec.Type, rec.StreamID))
	}
	return id, nil
}

// applyAccount keeps the account summaries: one hash per account. Every
// write sets whole values taken from the event (the balance after it,
// the stream version), or increments, so records of one batch compose.
func applyAccount(ctx context.Context, b *projection.Batch, rec eventstore.Record, ev domain.AccountEvent) error {
	id, err := accountID(rec)
	if err != nil {
		return err
	}
	key := b.Key("account", id.String())
	p := b.Pipe()
	common := []any{"version", i64(rec.Version), "updated_at", at(rec)}
	switch e := ev.(type) {
	case domain.AccountOpened:
		p.HSet(ctx, key, append([]any{
			"id", id.String(), "owner", e.Owner, "principal", e.Principal, "currency", e.Currency,
			"overdraft_limit", i64(e.OverdraftLimit), "balance", "0", "in_flight", "0",
			"status", string(domain.StatusOpen), "opened_at", at(rec),
		}, common...)...)
	case domain.Deposited:
		p.HSet(ctx, key, append([]any{"balance", i64(e.Balance)}, common...)...)
		if e.Refund {
			p.HIncrBy(ctx, key, "in_flight", -e.Amount)
		}
	case domain.Withdrawn:
		p.HSet(ctx, key, append([]any{"balance", i64(e.Balance)}, common...)...)
		if e.TransferID != uuid.Nil {
			p.HIncrBy(ctx, key, "in_flight", e.Amount)
		}
	case domain.TransferSettled:
		p.HSet(ctx, key, common...)
		p.HIncrBy(ctx, key, "in_flight", -e.Amount)
	case domain.AccountFrozen:
		p.HSet(ctx, key, append([]any{"status", string(domain.StatusFrozen)}, common...)...)
	case domain.AccountUnfrozen:
		p.HSet(ctx, key, append([]any{"status", string(domain.StatusOpen)}, common...)...)
	case domain.AccountClosed:
		p.HSet(ctx, key, append([]any{"status", string(domain.StatusClosed)}, common...)...)
	default:
		p.HSet(ctx, key, common...)
	}
	return nil
}

// applyTransaction keeps each account's history of money movements: a
// sorted set scored by the account stream's version, whose members are the
// JSON-encoded Transactions (unique, since each holds its version).
func applyTransaction(ctx context.Context, b *projection.Batch, rec eventstore.Record, ev domain.AccountEvent) error {
	id, err := accountID(rec)
	if err != nil {
		return err
	}
	if e, ok := ev.(domain.AccountOpened); ok {
		// The history exists (empty) from the opening on; the key holds
		// the principal it answers to.
		b.Pipe().Set(ctx, b.Key("opened", id.String()), e.Principal, 0)
		return nil
	}
	t := transaction(rec, ev)
	if t == nil {
		return nil
	}
	member, err := json.Marshal(t)
	if err != nil {
		return projection.Permanent(fmt.Errorf("readmodel: encode transaction: %w", err))
	}
	b.Pipe().ZAdd(ctx, b.Key("history", id.String()), redis.Z{Score: float64(rec.Version), Member: string(member)})
	return nil
}

// transaction returns the history's entry of an account event: nil for
// an event that moves no money.
func transaction(rec eventstore.Record, ev domain.AccountEvent) *Transaction {
	t := &Transaction{Version: rec.Version, At: rec.RecordedAt.UTC(), Position: rec.Position.String()}
	switch e := ev.(type) {
	case domain.Deposited:
		t.Amount, t.Balance, t.TransferID = e.Amount, e.Balance, e.TransferID
		switch {
		case e.Refund:
			t.Kind = KindRefund
		case e.TransferID != uuid.Nil:
			t.Kind = KindTransferIn
		default:
			t.Kind = KindDeposit
		}
	case domain.Withdrawn:
		t.Amount, t.Balance, t.TransferID = -e.Amount, e.Balance, e.TransferID
		t.Kind = KindWithdrawal
		if e.TransferID != uuid.Nil {
			t.Kind = KindTransferOut
		}
	default:
		return nil
	}
	return t
}
