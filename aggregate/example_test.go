package aggregate_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/memstore"
	"github.com/eskit/eskit/snapshot"
)

// Commands of the wallet.
type (
	Deposit  struct{ Amount int64 }
	Withdraw struct{ Amount int64 }
)

// WalletEvent is a sealed interface: one struct per event type.
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

// Wallet is the state the decider needs (JSON-encodable for snapshots).
type Wallet struct{ Balance int64 }

var ErrInsufficientFunds = errors.New("insufficient funds")

// wallet is the decider: three pure functions, the methods of a named
// type (aggregate.NewDecider makes one from three function values).
type wallet struct{}

func (wallet) Initial() Wallet { return Wallet{} }

func (wallet) Decide(s Wallet, cmd any) ([]WalletEvent, error) {
	switch c := cmd.(type) {
	case Deposit:
		return []WalletEvent{Deposited{Amount: c.Amount}}, nil
	case Withdraw:
		if c.Amount > s.Balance {
			return nil, ErrInsufficientFunds
		}
		return []WalletEvent{Withdrawn{Amount: c.Amount}}, nil
	}
	return nil, fmt.Errorf("unknown command %T", cmd)
}

func (wallet) Evolve(s Wallet, e WalletEvent) Wallet {
	switch e := e.(type) {
	case Deposited:
		s.Balance += e.Amount
	case Withdrawn:
		s.Balance -= e.Amount
	}
	return s
}

func walletRegistry() *eventstore.Registry {
	reg := eventstore.NewRegistry()
	if err := errors.Join(
		eventstore.Register[Deposited](reg, "wallet.Deposited"),
		eventstore.Register[Withdrawn](reg, "wallet.Withdrawn"),
	); err != nil {
		panic(err)
	}
	return reg
}

// A repository loads a stream's state, lets the decider decide, and appends
// the events with the version it decided on (retrying on conflicts).
func Example() {
	ctx := context.Background()
	repo, err := aggregate.NewRepository(memstore.New(), walletRegistry(), wallet{})
	if err != nil {
		panic(err)
	}
	defer repo.Close()

	res, err := repo.Handle(ctx, "wallet-1", Deposit{Amount: 100})
	fmt.Println(res.Version, res.State.Balance, res.Position, err)
	res, _ = repo.Handle(ctx, "wallet-1", Withdraw{Amount: 30})
	fmt.Printf("%d %d %#v\n", res.Version, res.State.Balance, res.Events)

	// A rejection is the decider's own error; nothing is appended.
	_, err = repo.Handle(ctx, "wallet-1", Withdraw{Amount: 1000})
	fmt.Println(errors.Is(err, ErrInsufficientFunds), errors.Is(err, aggregate.ErrRejected))

	state, version, _ := repo.Load(ctx, "wallet-1")
	fmt.Println(state.Balance, version)
	// Output:
	// 1 100 1-1 <nil>
	// 2 70 []aggregate_test.WalletEvent{aggregate_test.Withdrawn{Amount:30}}
	// true true
	// 70 2
}

// A command ID makes a command idempotent: a retry (after a timeout, say)
// is answered with the original result instead of being applied twice,
// even when the new state would reject it.
func ExampleWithCommandID() {
	ctx := context.Background()
	repo, _ := aggregate.NewRepository(memstore.New(), walletRegistry(), wallet{})
	defer repo.Close()
	_, _ = repo.Handle(ctx, "wallet-1", Deposit{Amount: 50})

	id := uuid.New() // from the client's Idempotency-Key, for example
	first, _ := repo.Handle(ctx, "wallet-1", Withdraw{Amount: 50}, aggregate.WithCommandID(id))
	again, err := repo.Handle(ctx, "wallet-1", Withdraw{Amount: 50}, aggregate.WithCommandID(id))
	fmt.Println(first.Version, first.Duplicate)
	fmt.Println(again.Version, again.Duplicate, again.State.Balance, err)

	// The same ID with another command is a mistake the caller hears of.
	_, err = repo.Handle(ctx, "wallet-1", Withdraw{Amount: 1}, aggregate.WithCommandID(id))
	var reused *aggregate.CommandIDReusedError
	fmt.Println(errors.As(err, &reused))
	// Output:
	// 2 false
	// 2 true 0 <nil>
	// true
}

// With snapshots, a load reads the latest snapshot and only the events
// after it. The repository takes them in the background as the policy says.
func ExampleWithSnapshots() {
	ctx := context.Background()
	snapshots := snapshot.NewMemory()
	repo, _ := aggregate.NewRepository(memstore.New(), walletRegistry(), wallet{},
		aggregate.WithSnapshots(snapshots, snapshot.EveryN(3)))
	defer repo.Close()

	for range 7 {
		_, _ = repo.Handle(ctx, "wallet-1", Deposit{Amount: 10})
		_ = repo.Flush(ctx) // wait for the background snapshot, if any (for the example)
	}

	s, _ := snapshots.Load(ctx, "wallet-1")
	fmt.Println(s.Version, string(s.State))
	state, version, _ := repo.Load(ctx, "wallet-1") // snapshot at 6 + event 7
	fmt.Println(state.Balance, version, repo.SnapshotStats().Saved)
	// Output:
	// 6 {"Balance":60}
	// 70 7 2
}

// Metadata rides along with every event a command causes: per call, or
// derived from the context (a request's correlation ID, say).
func ExampleWithMetadataFrom() {
	type requestKey struct{}
	ctx := context.WithValue(context.Background(), requestKey{}, "req-7")
	store := memstore.New()
	repo, _ := aggregate.NewRepository(store, walletRegistry(), wallet{},
		aggregate.WithMetadataFrom(func(ctx context.Context) eventstore.Metadata {
			id, _ := ctx.Value(requestKey{}).(string)
			return eventstore.Metadata{eventstore.MetaCorrelationID: id}
		}))
	defer repo.Close()

	_, _ = repo.Handle(ctx, "wallet-1", Deposit{Amount: 10}, aggregate.WithMetadata(eventstore.Metadata{"channel": "atm"}))
	recs, _ := eventstore.Collect(store.ReadStream(ctx, "wallet-1", 1))
	fmt.Println(recs[0].Metadata[eventstore.MetaCorrelationID], recs[0].Metadata["channel"])
	// Output: req-7 atm
}

// Fold applies events to a state: the decider's Evolve, without a store.
func ExampleFold() {
	history := []WalletEvent{Deposited{Amount: 100}, Withdrawn{Amount: 30}, Deposited{Amount: 5}}
	s := aggregate.Fold(wallet{}, wallet{}.Initial(), history...)
	fmt.Println(s.Balance)
	// Output: 75
}
