// Package account is a small bank-account domain that the aggregate and
// aggtest packages test against.
package account

import (
	"errors"
	"fmt"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/eventstore"
)

// VIPThreshold is the balance at which an account becomes VIP.
const VIPThreshold = 1000

// State is an account.
type State struct {
	Open    bool
	Owner   string
	Balance int64
	VIP     bool
}

// Command is one of Open, Deposit, Withdraw.
type Command interface{ isCommand() }

// Open opens the account for Owner. Opening an open account for the same
// owner changes nothing.
type Open struct{ Owner string }

// Deposit adds Amount.
type Deposit struct{ Amount int64 }

// Withdraw removes Amount.
type Withdraw struct{ Amount int64 }

func (Open) isCommand()     {}
func (Deposit) isCommand()  {}
func (Withdraw) isCommand() {}

// Event is one of Opened, Deposited, Withdrawn, BecameVIP.
type Event interface{ isEvent() }

// Opened is the first event of an account.
type Opened struct{ Owner string }

// Deposited records a deposit.
type Deposited struct{ Amount int64 }

// Withdrawn records a withdrawal.
type Withdrawn struct{ Amount int64 }

// BecameVIP follows the deposit that first takes the balance to
// VIPThreshold.
type BecameVIP struct{}

func (Opened) isEvent()    {}
func (Deposited) isEvent() {}
func (Withdrawn) isEvent() {}
func (BecameVIP) isEvent() {}

// Errors of rejected commands.
var (
	ErrNotOpen       = errors.New("account: not open")
	ErrAlreadyOpen   = errors.New("account: already open for another owner")
	ErrInvalidAmount = errors.New("account: amount must be positive")
)

// InsufficientFundsError rejects a withdrawal larger than the balance.
type InsufficientFundsError struct{ Balance, Amount int64 }

func (e *InsufficientFundsError) Error() string {
	return fmt.Sprintf("account: cannot withdraw %d from a balance of %d", e.Amount, e.Balance)
}

// Decider is the account's decider.
type Decider struct{}

var _ aggregate.Decider[State, Command, Event] = Decider{}

// Initial implements aggregate.Decider.
func (Decider) Initial() State { return State{} }

// Decide implements aggregate.Decider.
func (Decider) Decide(s State, c Command) ([]Event, error) {
	switch c := c.(type) {
	case Open:
		switch {
		case !s.Open:
			return []Event{Opened(c)}, nil
		case s.Owner == c.Owner:
			return nil, nil
		default:
			return nil, ErrAlreadyOpen
		}
	case Deposit:
		if !s.Open {
			return nil, ErrNotOpen
		}
		if c.Amount <= 0 {
			return nil, ErrInvalidAmount
		}
		evs := []Event{Deposited(c)}
		if !s.VIP && s.Balance+c.Amount >= VIPThreshold {
			evs = append(evs, BecameVIP{})
		}
		return evs, nil
	case Withdraw:
		if !s.Open {
			return nil, ErrNotOpen
		}
		if c.Amount <= 0 {
			return nil, ErrInvalidAmount
		}
		if c.Amount > s.Balance {
			return nil, &InsufficientFundsError{Balance: s.Balance, Amount: c.Amount}
		}
		return []Event{Withdrawn(c)}, nil
	}
	return nil, fmt.Errorf("account: unknown command %T", c)
}

// Evolve implements aggregate.Decider.
func (Decider) Evolve(s State, e Event) State {
	switch e := e.(type) {
	case Opened:
		s.Open, s.Owner = true, e.Owner
	case Deposited:
		s.Balance += e.Amount
	case Withdrawn:
		s.Balance -= e.Amount
	case BecameVIP:
		s.VIP = true
	}
	return s
}

// Invariant checks what must hold in every state.
func Invariant(s State) error {
	switch {
	case s.Balance < 0:
		return fmt.Errorf("negative balance %d", s.Balance)
	case !s.Open && (s.Balance != 0 || s.VIP || s.Owner != ""):
		return fmt.Errorf("closed account with state %+v", s)
	}
	return nil
}

// Registry returns a registry with the account's events.
func Registry() (*eventstore.Registry, error) {
	r := eventstore.NewRegistry()
	for _, err := range []error{
		eventstore.Register[Opened](r, "account.opened"),
		eventstore.Register[Deposited](r, "account.deposited"),
		eventstore.Register[Withdrawn](r, "account.withdrawn"),
		eventstore.Register[BecameVIP](r, "account.became_vip"),
	} {
		if err != nil {
			return nil, err
		}
	}
	return r, nil
}
