package domain

import (
	"fmt"
	"math"
	"slices"

	"github.com/google/uuid"

	"github.com/eskit/eskit/aggregate"
)

// AccountStatus is where an account is in its life.
type AccountStatus string

// The statuses of an account. The zero status is an account that was never
// opened.
const (
	StatusOpen   AccountStatus = "open"
	StatusFrozen AccountStatus = "frozen"
	StatusClosed AccountStatus = "closed"
)

// PendingTransfer is an outgoing transfer whose amount has left an account
// but which is neither settled nor refunded yet.
type PendingTransfer struct {
	TransferID uuid.UUID `json:"transfer_id"`
	Amount     int64     `json:"amount"`
}

// Account is the state of an account. Amounts are in minor units of
// Currency (cents for EUR, yen for JPY).
type Account struct {
	ID     uuid.UUID     `json:"id"`
	Status AccountStatus `json:"status,omitempty"`
	Owner  string        `json:"owner,omitempty"`
	// Principal is the caller that opened the account, the only one it
	// answers to (see ValidPrincipal).
	Principal      string `json:"principal,omitempty"`
	Currency       string `json:"currency,omitempty"`
	OverdraftLimit int64  `json:"overdraft_limit,omitempty"`
	Balance        int64  `json:"balance,omitempty"`
	// Pending lists the outgoing transfers in flight, oldest first (nil
	// when there are none).
	Pending []PendingTransfer `json:"pending,omitempty"`
}

// Opened reports whether the account was ever opened.
func (a Account) Opened() bool { return a.Status != "" }

// PendingTotal is the sum of the amounts of the transfers in flight. The
// account decider keeps it, and Balance plus it, within an int64.
func (a Account) PendingTotal() int64 {
	var sum int64
	for _, p := range a.Pending {
		sum += p.Amount
	}
	return sum
}

// pendingIndex returns the index of the transfer in Pending, or -1.
func (a Account) pendingIndex(transferID uuid.UUID) int {
	return slices.IndexFunc(a.Pending, func(p PendingTransfer) bool { return p.TransferID == transferID })
}

// AccountCommand is a command for an account: OpenAccount, Deposit,
// Withdraw, Freeze, Unfreeze, Close, or one of the commands the transfer
// process sends (DebitForTransfer, CreditForTransfer, RefundTransfer,
// SettleTransfer).
type AccountCommand interface{ isAccountCommand() }

// OpenAccount opens the account with the ID for Principal (who then owns
// it). OverdraftLimit is how far below zero the balance may go (0: not at
// all).
type OpenAccount struct {
	ID             uuid.UUID
	Owner          string
	Principal      string
	Currency       string
	OverdraftLimit int64
}

// The commands a client sends name the principal they come from in By:
// an account answers only to the principal that opened it, and is not
// found (ErrAccountNotFound) for any other.

// Deposit adds Amount (minor units of Currency) to the balance.
type Deposit struct {
	Amount   int64
	Currency string
	By       string
}

// Withdraw takes Amount (minor units of Currency) from the balance.
type Withdraw struct {
	Amount   int64
	Currency string
	By       string
}

// Freeze stops deposits, withdrawals and closing until Unfreeze. Freezing
// a frozen account changes nothing. Reason is free text (see
// MaxReasonLength).
type Freeze struct {
	Reason string
	By     string
}

// Unfreeze lifts a Freeze. Unfreezing an account that is not frozen
// changes nothing.
type Unfreeze struct{ By string }

// Close closes the account for good. Only an account with a zero balance
// and no outgoing transfer in flight can be closed.
type Close struct{ By string }

// DebitForTransfer withdraws a transfer's amount from its source account
// and marks the transfer pending there.
type DebitForTransfer struct {
	TransferID uuid.UUID
	Amount     int64
	Currency   string
}

// CreditForTransfer deposits a transfer's amount into its target account.
type CreditForTransfer struct {
	TransferID uuid.UUID
	Amount     int64
	Currency   string
}

// RefundTransfer gives a pending transfer's amount back to its source
// account. A frozen account accepts it: a compensation never fails.
type RefundTransfer struct{ TransferID uuid.UUID }

// SettleTransfer ends a pending transfer that reached its target.
type SettleTransfer struct{ TransferID uuid.UUID }

func (OpenAccount) isAccountCommand()       {}
func (Deposit) isAccountCommand()           {}
func (Withdraw) isAccountCommand()          {}
func (Freeze) isAccountCommand()            {}
func (Unfreeze) isAccountCommand()          {}
func (Close) isAccountCommand()             {}
func (DebitForTransfer) isAccountCommand()  {}
func (CreditForTransfer) isAccountCommand() {}
func (RefundTransfer) isAccountCommand()    {}
func (SettleTransfer) isAccountCommand()    {}

// AccountEvent is an event of an account stream.
type AccountEvent interface{ isAccountEvent() }

// AccountOpened is the first event of every account.
type AccountOpened struct {
	AccountID      uuid.UUID `json:"account_id"`
	Owner          string    `json:"owner"`
	Principal      string    `json:"principal,omitempty"`
	Currency       string    `json:"currency"`
	OverdraftLimit int64     `json:"overdraft_limit"`
}

// Deposited records money coming in. Balance is the balance after it.
// TransferID is set when the money came from a transfer: into its target
// (Refund false) or back into its source (Refund true).
type Deposited struct {
	Amount     int64     `json:"amount"`
	Balance    int64     `json:"balance"`
	TransferID uuid.UUID `json:"transfer_id,omitzero"`
	Refund     bool      `json:"refund,omitempty"`
}

// Withdrawn records money going out. Balance is the balance after it.
// TransferID is set when the money left for a transfer, which is then
// pending until settled or refunded.
type Withdrawn struct {
	Amount     int64     `json:"amount"`
	Balance    int64     `json:"balance"`
	TransferID uuid.UUID `json:"transfer_id,omitzero"`
}

// AccountFrozen records a freeze.
type AccountFrozen struct {
	Reason string `json:"reason,omitempty"`
}

// AccountUnfrozen records the end of a freeze.
type AccountUnfrozen struct{}

// AccountClosed records the closing of the account.
type AccountClosed struct{}

// TransferSettled records that a pending outgoing transfer reached its
// target. The balance does not change: the money left with the debit.
type TransferSettled struct {
	TransferID uuid.UUID `json:"transfer_id"`
	Amount     int64     `json:"amount"`
}

func (AccountOpened) isAccountEvent()   {}
func (Deposited) isAccountEvent()       {}
func (Withdrawn) isAccountEvent()       {}
func (AccountFrozen) isAccountEvent()   {}
func (AccountUnfrozen) isAccountEvent() {}
func (AccountClosed) isAccountEvent()   {}
func (TransferSettled) isAccountEvent() {}

// AccountDecider decides account commands. It is stateless; use its zero
// value.
type AccountDecider struct{}

var _ aggregate.Decider[Account, AccountCommand, AccountEvent] = AccountDecider{}

// Initial implements aggregate.Decider: an account never opened.
func (AccountDecider) Initial() Account { return Account{} }

// Decide implements aggregate.Decider. It checks the command's fields
// first (a *ValidationError), then the account's state.
func (AccountDecider) Decide(a Account, cmd AccountCommand) ([]AccountEvent, error) {
	switch c := cmd.(type) {
	case OpenAccount:
		return decideOpen(a, c)
	case Deposit:
		if err := first(validateMoney(c.Amount, c.Currency), owns(a, c.By)); err != nil {
			return nil, err
		}
		return decideCredit(a, c.Amount, c.Currency, uuid.Nil)
	case CreditForTransfer:
		if err := validateMoney(c.Amount, c.Currency); err != nil {
			return nil, err
		}
		return decideCredit(a, c.Amount, c.Currency, c.TransferID)
	case Withdraw:
		if err := first(validateMoney(c.Amount, c.Currency), owns(a, c.By)); err != nil {
			return nil, err
		}
		return decideDebit(a, c.Amount, c.Currency, uuid.Nil)
	case DebitForTransfer:
		if err := validateMoney(c.Amount, c.Currency); err != nil {
			return nil, err
		}
		return decideDebit(a, c.Amount, c.Currency, c.TransferID)
	case Freeze:
		if err := first(ValidateText("reason", c.Reason, MaxReasonLength, false), owns(a, c.By), usable(a, true)); err != nil {
			return nil, err
		}
		if a.Status == StatusFrozen {
			return nil, nil
		}
		return []AccountEvent{AccountFrozen{Reason: c.Reason}}, nil
	case Unfreeze:
		if err := first(owns(a, c.By), usable(a, true)); err != nil {
			return nil, err
		}
		if a.Status != StatusFrozen {
			return nil, nil
		}
		return []AccountEvent{AccountUnfrozen{}}, nil
	case Close:
		if err := first(owns(a, c.By), usable(a, false)); err != nil {
			return nil, err
		}
		switch {
		case len(a.Pending) > 0:
			return nil, ErrTransferPending
		case a.Balance != 0:
			return nil, fmt.Errorf("%w: the balance is %d", ErrNonZeroBalance, a.Balance)
		}
		return []AccountEvent{AccountClosed{}}, nil
	case RefundTransfer:
		if err := usable(a, true); err != nil {
			return nil, err
		}
		i := a.pendingIndex(c.TransferID)
		if i < 0 {
			return nil, fmt.Errorf("%w: transfer %s is not pending on the account", ErrTransferState, c.TransferID)
		}
		// Balance plus the pending total fits an int64, so this cannot
		// overflow.
		amount := a.Pending[i].Amount
		return []AccountEvent{Deposited{Amount: amount, Balance: a.Balance + amount, TransferID: c.TransferID, Refund: true}}, nil
	case SettleTransfer:
		if err := usable(a, true); err != nil {
			return nil, err
		}
		i := a.pendingIndex(c.TransferID)
		if i < 0 {
			return nil, fmt.Errorf("%w: transfer %s is not pending on the account", ErrTransferState, c.TransferID)
		}
		return []AccountEvent{TransferSettled{TransferID: c.TransferID, Amount: a.Pending[i].Amount}}, nil
	}
	return nil, fmt.Errorf("%w: %T", ErrUnknownCommand, cmd)
}

func decideOpen(a Account, c OpenAccount) ([]AccountEvent, error) {
	if c.ID == uuid.Nil {
		return nil, &ValidationError{Field: "id", Reason: "missing"}
	}
	if err := first(ValidateText("owner", c.Owner, MaxOwnerLength, true), validatePrincipal("principal", c.Principal)); err != nil {
		return nil, err
	}
	if err := validateOverdraft("overdraft_limit", c.OverdraftLimit); err != nil {
		return nil, err
	}
	if err := validateCurrency("currency", c.Currency); err != nil {
		return nil, err
	}
	if a.Opened() {
		return nil, ErrAlreadyOpen
	}
	return []AccountEvent{AccountOpened{AccountID: c.ID, Owner: c.Owner, Principal: c.Principal, Currency: c.Currency, OverdraftLimit: c.OverdraftLimit}}, nil
}

// first returns the first non-nil error.
func first(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func validateMoney(amount int64, currency string) error {
	if err := validateAmount("amount", amount); err != nil {
		return err
	}
	return validateCurrency("currency", currency)
}

// usable checks that the account exists and is not closed, and, unless
// frozenOK, not frozen.
func usable(a Account, frozenOK bool) error {
	switch a.Status {
	case "":
		return ErrAccountNotFound
	case StatusClosed:
		return ErrAccountClosed
	case StatusFrozen:
		if !frozenOK {
			return ErrAccountFrozen
		}
	}
	return nil
}

func decideCredit(a Account, amount int64, currency string, transferID uuid.UUID) ([]AccountEvent, error) {
	if err := usable(a, false); err != nil {
		return nil, err
	}
	if currency != a.Currency {
		return nil, &CurrencyMismatchError{Account: a.Currency, Got: currency}
	}
	balance, ok := addChecked(a.Balance, amount)
	// Room stays for every pending transfer to be refunded.
	if _, roomy := addChecked(balance, a.PendingTotal()); !ok || !roomy {
		return nil, fmt.Errorf("%w: a deposit of %d on a balance of %d", ErrBalanceOverflow, amount, a.Balance)
	}
	return []AccountEvent{Deposited{Amount: amount, Balance: balance, TransferID: transferID}}, nil
}

func decideDebit(a Account, amount int64, currency string, transferID uuid.UUID) ([]AccountEvent, error) {
	if err := usable(a, false); err != nil {
		return nil, err
	}
	if currency != a.Currency {
		return nil, &CurrencyMismatchError{Account: a.Currency, Got: currency}
	}
	// The most that may leave: balance + overdraft limit, which only
	// saturates when it is beyond any int64 amount anyway.
	if available := addSaturating(a.Balance, a.OverdraftLimit); amount > available {
		return nil, &InsufficientFundsError{Balance: a.Balance, OverdraftLimit: a.OverdraftLimit, Amount: amount}
	}
	if transferID != uuid.Nil {
		if a.pendingIndex(transferID) >= 0 {
			return nil, fmt.Errorf("%w: transfer %s already debited the account", ErrTransferState, transferID)
		}
		if _, ok := addChecked(a.PendingTotal(), amount); !ok {
			return nil, fmt.Errorf("%w: too much in flight", ErrBalanceOverflow)
		}
	}
	// balance - amount >= -overdraft limit >= -MaxInt64: no overflow.
	return []AccountEvent{Withdrawn{Amount: amount, Balance: a.Balance - amount, TransferID: transferID}}, nil
}

// Evolve implements aggregate.Decider. It never changes the account it is
// given: Pending is copied before it changes.
func (AccountDecider) Evolve(a Account, e AccountEvent) Account {
	switch e := e.(type) {
	case AccountOpened:
		a = Account{ID: e.AccountID, Status: StatusOpen, Owner: e.Owner, Principal: e.Principal, Currency: e.Currency, OverdraftLimit: e.OverdraftLimit}
	case Deposited:
		a.Balance = e.Balance
		if e.Refund {
			a.Pending = withoutPending(a.Pending, e.TransferID)
		}
	case Withdrawn:
		a.Balance = e.Balance
		if e.TransferID != uuid.Nil {
			a.Pending = append(slices.Clip(a.Pending), PendingTransfer{TransferID: e.TransferID, Amount: e.Amount})
		}
	case AccountFrozen:
		a.Status = StatusFrozen
	case AccountUnfrozen:
		a.Status = StatusOpen
	case AccountClosed:
		a.Status = StatusClosed
	case TransferSettled:
		a.Pending = withoutPending(a.Pending, e.TransferID)
	}
	return a
}

// withoutPending returns a copy of pending without the transfer (nil when
// empty).
func withoutPending(pending []PendingTransfer, transferID uuid.UUID) []PendingTransfer {
	var out []PendingTransfer
	for _, p := range pending {
		if p.TransferID != transferID {
			out = append(out, p)
		}
	}
	return out
}

// AccountInvariant checks what holds for every account: the balance never
// goes below minus the overdraft limit, balance plus money in flight fits an
// int64, a closed account is empty, and an account never opened has no
// state.
func AccountInvariant(a Account) error {
	var pending int64
	for _, p := range a.Pending {
		if p.Amount <= 0 {
			return fmt.Errorf("pending transfer %s of %d", p.TransferID, p.Amount)
		}
		var ok bool
		if pending, ok = addChecked(pending, p.Amount); !ok {
			return fmt.Errorf("pending total overflows")
		}
	}
	switch {
	case a.OverdraftLimit < 0:
		return fmt.Errorf("negative overdraft limit %d", a.OverdraftLimit)
	case a.Balance < -a.OverdraftLimit:
		return fmt.Errorf("balance %d below the overdraft limit %d", a.Balance, a.OverdraftLimit)
	case a.Balance > math.MaxInt64-pending:
		return fmt.Errorf("balance %d plus %d in flight overflows", a.Balance, pending)
	case a.Status == StatusClosed && (a.Balance != 0 || len(a.Pending) > 0):
		return fmt.Errorf("closed account holds %d with %d transfers in flight", a.Balance, len(a.Pending))
	case !a.Opened() && (a.Balance != 0 || len(a.Pending) > 0 || a.Owner != ""):
		return fmt.Errorf("account never opened has state %+v", a)
	}
	return nil
}
