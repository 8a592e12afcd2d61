// Command quickstart is the write-side example of eskit's README: a wallet
// decider, its events registered by name, and a repository that loads,
// decides and appends. It runs on the in-memory store, or on PostgreSQL when
// ESKIT_POSTGRES_URL is set.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/memstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/snapshot"
)

// Commands.
type (
	Deposit  struct{ Amount int64 }
	Withdraw struct{ Amount int64 }
)

// Events: a sealed interface, one struct per event type.
type WalletEvent interface{ isWalletEvent() }

type (
	Deposited struct {
		Amount int64 `json:"amount"`
	}
	Withdrawn struct {
		Amount int64 `json:"amount"`
	}
)

func (Deposited) isWalletEvent() {}
func (Withdrawn) isWalletEvent() {}

// Wallet is the state the decider needs.
type Wallet struct{ Balance int64 }

// ErrInsufficientFunds is a business rule the decider enforces.
var ErrInsufficientFunds = errors.New("insufficient funds")

// wallet is the decider: three pure functions over the wallet's state. A
// named type needs no type parameters: NewRepository infers them from its
// methods.
type wallet struct{}

// Initial is the state of a wallet without events.
func (wallet) Initial() Wallet { return Wallet{} }

// Decide returns the events a command causes, or the rule it breaks.
func (wallet) Decide(s Wallet, cmd any) ([]WalletEvent, error) {
	switch c := cmd.(type) {
	case Deposit:
		if c.Amount <= 0 {
			return nil, errors.New("amount must be positive")
		}
		return []WalletEvent{Deposited{Amount: c.Amount}}, nil
	case Withdraw:
		if c.Amount > s.Balance {
			return nil, ErrInsufficientFunds
		}
		return []WalletEvent{Withdrawn{Amount: c.Amount}}, nil
	}
	return nil, fmt.Errorf("unknown command %T", cmd)
}

// Evolve returns the state after an event.
func (wallet) Evolve(s Wallet, e WalletEvent) Wallet {
	switch e := e.(type) {
	case Deposited:
		s.Balance += e.Amount
	case Withdrawn:
		s.Balance -= e.Amount
	}
	return s
}

func main() {
	if err := run(context.Background()); err != nil {
		slog.Error("quickstart failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	// The registry maps Go types to stored event type names.
	reg := eventstore.NewRegistry()
	if err := errors.Join(
		eventstore.Register[Deposited](reg, "wallet.Deposited"),
		eventstore.Register[Withdrawn](reg, "wallet.Withdrawn"),
	); err != nil {
		return err
	}

	// The store: PostgreSQL when configured, in memory otherwise.
	var store eventstore.Store = memstore.New()
	snapshots := snapshot.Store(snapshot.NewMemory())
	if url := os.Getenv("ESKIT_POSTGRES_URL"); url != "" {
		pool, err := pgxpool.New(ctx, url)
		if err != nil {
			return err
		}
		defer pool.Close()
		pg, err := pgstore.New(ctx, pool, pgstore.WithAutoMigrate())
		if err != nil {
			return err
		}
		defer pg.Close()
		store, snapshots = pg, pgstore.NewSnapshots(pool, pg.Schema())
	}

	// The repository: load (snapshot + tail), decide, append, retry on
	// conflict; a snapshot every 100 events, taken in the background.
	repo, err := aggregate.NewRepository(store, reg, wallet{},
		aggregate.WithSnapshots(snapshots, snapshot.EveryN(100)))
	if err != nil {
		return err
	}
	defer repo.Close()

	id := "wallet-" + uuid.NewString()
	if _, err := repo.Handle(ctx, id, Deposit{Amount: 100}); err != nil {
		return err
	}

	// A command ID makes a command idempotent: the retry is answered with
	// the original result instead of withdrawing twice.
	cmdID := uuid.New()
	first, err := repo.Handle(ctx, id, Withdraw{Amount: 30}, aggregate.WithCommandID(cmdID))
	if err != nil {
		return err
	}
	again, err := repo.Handle(ctx, id, Withdraw{Amount: 30}, aggregate.WithCommandID(cmdID))
	if err != nil {
		return err
	}

	// Business rules come back as the decider's own errors.
	_, err = repo.Handle(ctx, id, Withdraw{Amount: 1000})
	fmt.Println("overdraw rejected:", errors.Is(err, ErrInsufficientFunds))

	state, version, err := repo.Load(ctx, id)
	if err != nil {
		return err
	}
	fmt.Printf("balance %d at version %d; retry was a duplicate: %v (position %s)\n",
		state.Balance, version, again.Duplicate, first.Position)
	return nil
}
