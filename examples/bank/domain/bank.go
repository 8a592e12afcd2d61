package domain

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/snapshot"
)

// AccountRepository loads and changes accounts.
type AccountRepository = aggregate.Repository[Account, AccountCommand, AccountEvent]

// TransferRepository loads and changes transfers.
type TransferRepository = aggregate.Repository[Transfer, TransferCommand, TransferEvent]

// Result is the outcome of a command handled by the Bank.
type Result struct {
	// ID is the account or transfer the command was handled on (the new
	// one's, for OpenAccount and RequestTransfer).
	ID uuid.UUID
	// StreamID is its stream.
	StreamID string
	// Version is the stream's version after the command.
	Version int64
	// Position is the feed position of the command's last event (zero
	// when the command changed nothing). Queries on read models can wait
	// for it.
	Position eventstore.Position
	// Duplicate is true when a command with the same command ID had been
	// handled already: the result is the original one.
	Duplicate bool
}

type bankConfig struct {
	repoOpts []aggregate.Option
}

// Option configures a Bank.
type Option func(*bankConfig)

// WithSnapshots makes both repositories load states from snapshots and
// take new ones whenever policy says so.
func WithSnapshots(store snapshot.Store, policy snapshot.Policy) Option {
	return WithRepositoryOptions(aggregate.WithSnapshots(store, policy))
}

// WithRepositoryOptions passes options (logger, retries, metadata, ...) to
// both repositories.
func WithRepositoryOptions(opts ...aggregate.Option) Option {
	return func(c *bankConfig) { c.repoOpts = append(c.repoOpts, opts...) }
}

// Bank is the bank's command and query service over an event store. It is
// safe for concurrent use.
type Bank struct {
	store     eventstore.Store
	registry  *eventstore.Registry
	accounts  *AccountRepository
	transfers *TransferRepository
}

// New returns a Bank over store. Close it when done.
func New(store eventstore.Store, opts ...Option) (*Bank, error) {
	var cfg bankConfig
	for _, o := range opts {
		o(&cfg)
	}
	reg := eventstore.NewRegistry()
	if err := Register(reg); err != nil {
		return nil, fmt.Errorf("bank: register events: %w", err)
	}
	accounts, err := aggregate.NewRepository(store, reg, AccountDecider{}, cfg.repoOpts...)
	if err != nil {
		return nil, fmt.Errorf("bank: account repository: %w", err)
	}
	transfers, err := aggregate.NewRepository(store, reg, TransferDecider{}, cfg.repoOpts...)
	if err != nil {
		_ = accounts.Close()
		return nil, fmt.Errorf("bank: transfer repository: %w", err)
	}
	return &Bank{store: store, registry: reg, accounts: accounts, transfers: transfers}, nil
}

// Close waits for pending snapshots to be saved. It does not close the
// store.
func (b *Bank) Close() error {
	return errors.Join(b.accounts.Close(), b.transfers.Close())
}

// Store returns the event store.
func (b *Bank) Store() eventstore.Store { return b.store }

// Registry returns the registry of the bank's event types.
func (b *Bank) Registry() *eventstore.Registry { return b.registry }

// Accounts returns the account repository.
func (b *Bank) Accounts() *AccountRepository { return b.accounts }

// Transfers returns the transfer repository.
func (b *Bank) Transfers() *TransferRepository { return b.transfers }

// newID returns the ID of a new account or transfer: derived from the
// command ID when there is one, so that a retried command addresses the
// same stream, and a new v7 UUID otherwise.
func newID(commandID uuid.UUID, kind string) uuid.UUID {
	if commandID != uuid.Nil {
		return uuid.NewSHA1(commandID, []byte(kind))
	}
	return eventstore.NewEventID()
}

func handleOpts(commandID uuid.UUID) []aggregate.HandleOption {
	if commandID == uuid.Nil {
		return nil
	}
	return []aggregate.HandleOption{aggregate.WithCommandID(commandID)}
}

func result[S, E any](id uuid.UUID, r aggregate.Result[S, E]) Result {
	return Result{ID: id, StreamID: r.StreamID, Version: r.Version, Position: r.Position, Duplicate: r.Duplicate}
}

// OpenAccount opens an account. When cmd.ID is zero the account gets a new
// ID, derived from commandID when it is set (uuid.Nil: no command ID), so
// that a retried open opens no second account. Result.ID is the
// account's ID.
func (b *Bank) OpenAccount(ctx context.Context, cmd OpenAccount, commandID uuid.UUID) (Result, error) {
	if cmd.ID == uuid.Nil {
		cmd.ID = newID(commandID, "account")
	}
	return b.handleAccount(ctx, cmd.ID, cmd, commandID)
}

// Deposit deposits into the account.
func (b *Bank) Deposit(ctx context.Context, accountID uuid.UUID, cmd Deposit, commandID uuid.UUID) (Result, error) {
	return b.handleAccount(ctx, accountID, cmd, commandID)
}

// Withdraw withdraws from the account.
func (b *Bank) Withdraw(ctx context.Context, accountID uuid.UUID, cmd Withdraw, commandID uuid.UUID) (Result, error) {
	return b.handleAccount(ctx, accountID, cmd, commandID)
}

// Freeze freezes the account.
func (b *Bank) Freeze(ctx context.Context, accountID uuid.UUID, cmd Freeze, commandID uuid.UUID) (Result, error) {
	return b.handleAccount(ctx, accountID, cmd, commandID)
}

// Unfreeze unfreezes the account.
func (b *Bank) Unfreeze(ctx context.Context, accountID uuid.UUID, cmd Unfreeze, commandID uuid.UUID) (Result, error) {
	return b.handleAccount(ctx, accountID, cmd, commandID)
}

// CloseAccount closes the account.
func (b *Bank) CloseAccount(ctx context.Context, accountID uuid.UUID, cmd Close, commandID uuid.UUID) (Result, error) {
	return b.handleAccount(ctx, accountID, cmd, commandID)
}

func (b *Bank) handleAccount(ctx context.Context, id uuid.UUID, cmd AccountCommand, commandID uuid.UUID) (Result, error) {
	if id == uuid.Nil {
		return Result{}, &ValidationError{Field: "account_id", Reason: "missing"}
	}
	r, err := b.accounts.Handle(ctx, AccountStream(id), cmd, handleOpts(commandID)...)
	if err != nil {
		return Result{}, err
	}
	return result(id, r), nil
}

// RequestTransfer requests a transfer; the transfer process (see
// NewTransferProcess) carries it out.
// When cmd.ID is zero the transfer gets a new ID, derived from commandID
// when it is set. Result.ID is the transfer's ID; Transfer reports its
// progress.
func (b *Bank) RequestTransfer(ctx context.Context, cmd RequestTransfer, commandID uuid.UUID) (Result, error) {
	if cmd.ID == uuid.Nil {
		cmd.ID = newID(commandID, "transfer")
	}
	r, err := b.transfers.Handle(ctx, TransferStream(cmd.ID), cmd, handleOpts(commandID)...)
	if err != nil {
		return Result{}, err
	}
	return result(cmd.ID, r), nil
}

// Account returns the account and its stream's version, or
// ErrAccountNotFound.
func (b *Bank) Account(ctx context.Context, id uuid.UUID) (Account, int64, error) {
	a, v, err := b.accounts.Load(ctx, AccountStream(id))
	if err != nil {
		return Account{}, 0, err
	}
	if !a.Opened() {
		return Account{}, 0, fmt.Errorf("%w: %s", ErrAccountNotFound, id)
	}
	return a, v, nil
}

// Transfer returns the transfer and its stream's version, or
// ErrTransferNotFound.
func (b *Bank) Transfer(ctx context.Context, id uuid.UUID) (Transfer, int64, error) {
	t, v, err := b.transfers.Load(ctx, TransferStream(id))
	if err != nil {
		return Transfer{}, 0, err
	}
	if t.Status == "" {
		return Transfer{}, 0, fmt.Errorf("%w: %s", ErrTransferNotFound, id)
	}
	return t, v, nil
}
