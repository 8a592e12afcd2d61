package aggtest_test

import (
	"errors"
	"fmt"

	"github.com/eskit/eskit/aggregate/aggtest"
)

// printT stands in for the *testing.T a test passes: it prints what a
// scenario reports.
type printT struct{}

func (printT) Helper()                        {}
func (printT) Errorf(format string, a ...any) { fmt.Printf(format+"\n", a...) }
func (printT) Fatalf(format string, a ...any) { fmt.Printf(format+"\n", a...) }

// Given/when/then: the events a stream holds, a command, and the events
// (or the rejection) the decider must answer with. In a test, pass the
// *testing.T; WalletDecider is the wallet of this package's tests.
func ExampleGiven() {
	var t printT
	wallet := aggtest.For[Wallet, WalletCommand, WalletEvent](t, WalletDecider{})

	wallet.Given(WalletOpened{Limit: 50}, Deposited{Amount: 10}).
		When(Withdraw{Amount: 40}).
		Then(Withdrawn{Amount: 40}).
		ThenState(func(w Wallet) { fmt.Println("balance:", w.Balance) })

	wallet.Given(WalletOpened{}, Frozen{}).
		When(Withdraw{Amount: 1}).
		ThenError(errFrozen)

	// A scenario that fails reports the whole story.
	wallet.Given(WalletOpened{}, Deposited{Amount: 10}).
		When(Withdraw{Amount: 30}).
		Then(Withdrawn{Amount: 30})
	// Output:
	// balance: -30
	// given 2 event(s):
	//     [0] aggtest_test.WalletOpened{Limit:0}
	//     [1] aggtest_test.Deposited{Amount:10}
	// when aggtest_test.Withdraw{Amount:30}
	// want events:
	//     [0] aggtest_test.Withdrawn{Amount:30}
	// got the rejection: wallet: insufficient funds
}

// Verify runs the property checks on one command sequence: a failing
// case rapid found (aggtest.Check), kept as a regression test, or a
// scenario written by hand.
func ExampleSpec_Verify() {
	spec := aggtest.Spec[Wallet, WalletCommand, WalletEvent]{
		Decider: WalletDecider{FrozenLimitBug: true},
		Invariants: []func(Wallet) error{func(w Wallet) error {
			if w.Balance < -w.Limit {
				return fmt.Errorf("balance %d is below the overdraft limit %d", w.Balance, w.Limit)
			}
			return nil
		}},
	}
	cmds := []WalletCommand{OpenWallet{Limit: 100}, Withdraw{Amount: 80}, Freeze{}, SetLimit{Limit: 0}, Unfreeze{}}
	fmt.Println(spec.Verify(cmds))

	spec.Decider = WalletDecider{} // fixed
	fmt.Println(errors.Join(spec.VerifyInvariants(cmds), spec.VerifyReplay(cmds), spec.VerifySnapshots(cmds)))
	// Output:
	// state aggtest_test.Wallet{Open:true, Balance:-80, Limit:0, Frozen:false, HasPending:false, Pending:0} breaks an invariant: balance -80 is below the overdraft limit 0
	// after:
	//   1. aggtest_test.OpenWallet{Limit:100} -> 1 event(s)
	//        aggtest_test.WalletOpened{Limit:100}
	//   2. aggtest_test.Withdraw{Amount:80} -> 1 event(s)
	//        aggtest_test.Withdrawn{Amount:80}
	//   3. aggtest_test.Freeze{} -> 1 event(s)
	//        aggtest_test.Frozen{}
	//   4. aggtest_test.SetLimit{Limit:0} -> 1 event(s)
	//        aggtest_test.LimitDeferred{Limit:0}
	//   5. aggtest_test.Unfreeze{} -> 1 event(s)
	//        aggtest_test.Unfrozen{}
	// <nil>
}
