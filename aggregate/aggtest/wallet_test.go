package aggtest_test

import (
	"errors"
	"fmt"

	"pgregory.net/rapid"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/aggregate/aggtest"
)

// Wallet is a bank account with an overdraft limit that can be frozen.
// A frozen wallet refuses withdrawals, and a change of its limit waits for
// the unfreeze.
type Wallet struct {
	Open       bool
	Balance    int64
	Limit      int64 // overdraft limit in force
	Frozen     bool
	HasPending bool
	Pending    int64 // limit that the unfreeze puts in force
}

// WalletCommand is one of the commands below.
type WalletCommand interface{ isWalletCommand() }

type (
	OpenWallet struct{ Limit int64 }
	Deposit    struct{ Amount int64 }
	Withdraw   struct{ Amount int64 }
	SetLimit   struct{ Limit int64 }
	Freeze     struct{}
	Unfreeze   struct{}
)

func (OpenWallet) isWalletCommand() {}
func (Deposit) isWalletCommand()    {}
func (Withdraw) isWalletCommand()   {}
func (SetLimit) isWalletCommand()   {}
func (Freeze) isWalletCommand()     {}
func (Unfreeze) isWalletCommand()   {}

// WalletEvent is one of the events below.
type WalletEvent interface{ isWalletEvent() }

type (
	WalletOpened  struct{ Limit int64 }
	Deposited     struct{ Amount int64 }
	Withdrawn     struct{ Amount int64 }
	LimitSet      struct{ Limit int64 }
	LimitDeferred struct{ Limit int64 }
	Frozen        struct{}
	Unfrozen      struct{}
)

func (WalletOpened) isWalletEvent()  {}
func (Deposited) isWalletEvent()     {}
func (Withdrawn) isWalletEvent()     {}
func (LimitSet) isWalletEvent()      {}
func (LimitDeferred) isWalletEvent() {}
func (Frozen) isWalletEvent()        {}
func (Unfrozen) isWalletEvent()      {}

var (
	errNotOpen      = errors.New("wallet: not open")
	errAlreadyOpen  = errors.New("wallet: already open")
	errInvalid      = errors.New("wallet: amounts and limits must not be negative")
	errFrozen       = errors.New("wallet: frozen")
	errNotFrozen    = errors.New("wallet: not frozen")
	errInsufficient = errors.New("wallet: insufficient funds")
	errLimitInUse   = errors.New("wallet: the new limit is below what is already drawn")
)

// WalletDecider decides on wallets. With FrozenLimitBug, a limit change
// on a frozen wallet skips the check that the new limit still covers what
// is already drawn: the code path for frozen wallets, added later, forgot
// it. Nothing goes wrong until the wallet is unfrozen, so only sequences
// such as open, withdraw into the overdraft, freeze, lower the limit,
// unfreeze, with any other commands in between, show it.
type WalletDecider struct{ FrozenLimitBug bool }

var _ aggregate.Decider[Wallet, WalletCommand, WalletEvent] = WalletDecider{}

// Initial implements aggregate.Decider.
func (WalletDecider) Initial() Wallet { return Wallet{} }

// Decide implements aggregate.Decider.
func (d WalletDecider) Decide(w Wallet, c WalletCommand) ([]WalletEvent, error) {
	if _, ok := c.(OpenWallet); !ok && !w.Open {
		return nil, errNotOpen
	}
	switch c := c.(type) {
	case OpenWallet:
		if w.Open {
			return nil, errAlreadyOpen
		}
		if c.Limit < 0 {
			return nil, errInvalid
		}
		return []WalletEvent{WalletOpened(c)}, nil
	case Deposit:
		if c.Amount <= 0 {
			return nil, errInvalid
		}
		return []WalletEvent{Deposited(c)}, nil
	case Withdraw:
		switch {
		case c.Amount <= 0:
			return nil, errInvalid
		case w.Frozen:
			return nil, errFrozen
		case c.Amount > w.Balance+w.Limit:
			return nil, errInsufficient
		}
		return []WalletEvent{Withdrawn(c)}, nil
	case SetLimit:
		if c.Limit < 0 {
			return nil, errInvalid
		}
		if w.Frozen {
			if !d.FrozenLimitBug && -w.Balance > c.Limit {
				return nil, errLimitInUse
			}
			return []WalletEvent{LimitDeferred(c)}, nil
		}
		if -w.Balance > c.Limit {
			return nil, errLimitInUse
		}
		return []WalletEvent{LimitSet(c)}, nil
	case Freeze:
		if w.Frozen {
			return nil, nil
		}
		return []WalletEvent{Frozen{}}, nil
	case Unfreeze:
		if !w.Frozen {
			return nil, errNotFrozen
		}
		return []WalletEvent{Unfrozen{}}, nil
	}
	return nil, fmt.Errorf("wallet: unknown command %T", c)
}

// Evolve implements aggregate.Decider.
func (WalletDecider) Evolve(w Wallet, e WalletEvent) Wallet {
	switch e := e.(type) {
	case WalletOpened:
		w.Open, w.Limit = true, e.Limit
	case Deposited:
		w.Balance += e.Amount
	case Withdrawn:
		w.Balance -= e.Amount
	case LimitSet:
		w.Limit = e.Limit
	case LimitDeferred:
		w.HasPending, w.Pending = true, e.Limit
	case Frozen:
		w.Frozen = true
	case Unfrozen:
		w.Frozen = false
		if w.HasPending {
			w.Limit, w.HasPending, w.Pending = w.Pending, false, 0
		}
	}
	return w
}

// noOverdraftBeyondLimit: the balance never goes below minus the
// overdraft limit.
func noOverdraftBeyondLimit(w Wallet) error {
	if w.Balance < -w.Limit {
		return fmt.Errorf("balance %d is below the overdraft limit %d", w.Balance, w.Limit)
	}
	return nil
}

// walletCommands draws every command, with amounts and limits up to 500.
func walletCommands() *rapid.Generator[WalletCommand] {
	amount := rapid.Int64Range(1, 500)
	limit := rapid.Int64Range(0, 500)
	return rapid.OneOf(
		rapid.Map(limit, func(l int64) WalletCommand { return OpenWallet{Limit: l} }),
		rapid.Map(amount, func(a int64) WalletCommand { return Deposit{Amount: a} }),
		rapid.Map(amount, func(a int64) WalletCommand { return Withdraw{Amount: a} }),
		rapid.Map(limit, func(l int64) WalletCommand { return SetLimit{Limit: l} }),
		rapid.Just[WalletCommand](Freeze{}),
		rapid.Just[WalletCommand](Unfreeze{}),
	)
}

func walletSpec(bug bool) aggtest.Spec[Wallet, WalletCommand, WalletEvent] {
	return aggtest.Spec[Wallet, WalletCommand, WalletEvent]{
		Decider:    WalletDecider{FrozenLimitBug: bug},
		Commands:   walletCommands(),
		Invariants: []func(Wallet) error{noOverdraftBeyondLimit},
	}
}
