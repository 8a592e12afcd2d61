package domain_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/eskit/eskit/eventstore/memstore"
	"github.com/eskit/eskit/examples/bank/domain"
	"github.com/eskit/eskit/saga"
)

// A bank on an in-memory store: two accounts, a transfer carried out by the
// transfer process, and a withdrawal the overdraft limit refuses.
func Example() {
	ctx := context.Background()
	bank, err := domain.New(memstore.New())
	if err != nil {
		panic(err)
	}
	defer bank.Close()
	process, err := domain.NewTransferProcess(bank, saga.NewMemoryStore())
	if err != nil {
		panic(err)
	}

	ann, _ := bank.OpenAccount(ctx, domain.OpenAccount{Owner: "Ann", Currency: "EUR", OverdraftLimit: 5_00}, uuid.Nil)
	bob, _ := bank.OpenAccount(ctx, domain.OpenAccount{Owner: "Bob", Currency: "EUR"}, uuid.Nil)
	_, _ = bank.Deposit(ctx, ann.ID, domain.Deposit{Amount: 100_00, Currency: "EUR"}, uuid.Nil)

	tr, _ := bank.RequestTransfer(ctx, domain.RequestTransfer{From: ann.ID, To: bob.ID, Amount: 30_00, Currency: "EUR"}, uuid.Nil)
	if err := process.Drain(ctx); err != nil {
		panic(err)
	}
	transfer, _, _ := bank.Transfer(ctx, tr.ID)
	a, _, _ := bank.Account(ctx, ann.ID)
	b, _, _ := bank.Account(ctx, bob.ID)
	fmt.Println("transfer:", transfer.Status)
	fmt.Println("ann:", a.Balance, "bob:", b.Balance)

	_, err = bank.Withdraw(ctx, ann.ID, domain.Withdraw{Amount: 80_00, Currency: "EUR"}, uuid.Nil)
	fmt.Println(errors.Is(err, domain.ErrInsufficientFunds), domain.ErrorCode(err))
	// Output:
	// transfer: completed
	// ann: 7000 bob: 3000
	// true insufficient_funds
}
