package commandbus_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/memstore"
)

// The wallet decider's command and event.
type (
	Credit   struct{ Amount int64 }
	Credited struct {
		Amount int64 `json:"amount"`
	}
)

// CreditWallet is the command the bus dispatches: it names the wallet.
type CreditWallet struct {
	Wallet string
	Amount int64
}

func ExampleHandleWith() {
	reg := eventstore.NewRegistry()
	_ = eventstore.Register[Credited](reg, "wallet.Credited")
	wallet := aggregate.NewDecider(
		func() int64 { return 0 },
		func(balance int64, c Credit) ([]Credited, error) {
			if c.Amount <= 0 {
				return nil, errors.New("amount must be positive")
			}
			return []Credited{{Amount: c.Amount}}, nil
		},
		func(balance int64, e Credited) int64 { return balance + e.Amount },
	)
	repo, err := aggregate.NewRepository(memstore.New(), reg, wallet)
	if err != nil {
		fmt.Println(err)
		return
	}
	// At shutdown, once the bus has handled its last command: Close
	// drains the repository's background snapshots.
	defer repo.Close()

	// Retry retries transient failures; the repository's own conflict
	// retries are not multiplied by it.
	bus := commandbus.New(commandbus.WithMiddleware(commandbus.Retry(commandbus.RetryPolicy{})))
	_ = commandbus.Register(bus, commandbus.HandleWith(repo, func(_ context.Context, c CreditWallet) (string, Credit, error) {
		return "wallet-" + c.Wallet, Credit{Amount: c.Amount}, nil
	}))

	ctx := commandbus.WithCommandID(context.Background(), uuid.New())
	res, err := bus.Dispatch(ctx, CreditWallet{Wallet: "42", Amount: 100})
	fmt.Println(res.StreamID, res.Version, res.Duplicate, err)

	// The same command ID again: the repository recognises it.
	res, err = bus.Dispatch(ctx, CreditWallet{Wallet: "42", Amount: 100})
	fmt.Println(res.StreamID, res.Version, res.Duplicate, err)

	_, err = bus.Dispatch(context.Background(), CreditWallet{Wallet: "42"})
	fmt.Println(errors.Is(err, aggregate.ErrRejected))

	balance, version, _ := repo.Load(context.Background(), "wallet-42")
	fmt.Println(balance, version)
	// Output:
	// wallet-42 1 false <nil>
	// wallet-42 1 true <nil>
	// true
	// 100 1
}
