package api

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/examples/bank/domain"
)

// The bank's commands, as the API dispatches them through a commandbus.
// Each checks its fields (Validate, run by commandbus.Validation) before a
// handler loads anything; the account and transfer deciders check them
// again, with the state.

// OpenAccount opens an account for Owner in Currency, owned by Principal
// (the caller).
type OpenAccount struct {
	Owner          string
	Currency       string
	OverdraftLimit int64
	Principal      string
}

// The other commands name their caller in By: an account answers only to
// the principal that opened it (domain.ValidPrincipal).

// Deposit deposits Amount into the account. An empty Currency means the
// account's.
type Deposit struct {
	AccountID uuid.UUID
	Amount    int64
	Currency  string
	By        string
}

// Withdraw withdraws Amount from the account. An empty Currency means the
// account's.
type Withdraw struct {
	AccountID uuid.UUID
	Amount    int64
	Currency  string
	By        string
}

// Freeze freezes the account.
type Freeze struct {
	AccountID uuid.UUID
	Reason    string
	By        string
}

// Unfreeze unfreezes the account.
type Unfreeze struct {
	AccountID uuid.UUID
	By        string
}

// CloseAccount closes the account.
type CloseAccount struct {
	AccountID uuid.UUID
	By        string
}

// RequestTransfer asks to move Amount from an account of By's to another
// account (anyone's), in the source account's currency. The transfer
// process carries it out.
type RequestTransfer struct {
	From, To uuid.UUID
	Amount   int64
	By       string
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

func invalid(field, reason string) error {
	return &domain.ValidationError{Field: field, Reason: reason}
}

// positive checks an amount: 1 to domain.MaxAmount.
func positive(field string, n int64) error {
	switch {
	case n <= 0:
		return &domain.ValidationError{Field: field, Reason: fmt.Sprintf("%d is not positive", n), Err: domain.ErrInvalidAmount}
	case n > domain.MaxAmount:
		return &domain.ValidationError{Field: field, Reason: fmt.Sprintf("%d is above the maximum of %d", n, domain.MaxAmount), Err: domain.ErrInvalidAmount}
	}
	return nil
}

func currency(field, c string, optional bool) error {
	if (c == "" && optional) || domain.ValidCurrency(c) {
		return nil
	}
	return invalid(field, fmt.Sprintf("%s is not a three-letter upper-case currency code", domain.Excerpt(c)))
}

func account(id uuid.UUID) error {
	if id == uuid.Nil {
		return invalid("id", "missing")
	}
	return nil
}

// Validate implements commandbus.Validator.
func (c OpenAccount) Validate() error {
	if err := domain.ValidateText("owner", c.Owner, domain.MaxOwnerLength, true); err != nil {
		return err
	}
	switch {
	case c.OverdraftLimit < 0:
		return invalid("overdraft_limit", fmt.Sprintf("%d is negative", c.OverdraftLimit))
	case c.OverdraftLimit > domain.MaxAmount:
		return invalid("overdraft_limit", fmt.Sprintf("%d is above the maximum of %d", c.OverdraftLimit, domain.MaxAmount))
	case c.Currency == "":
		return invalid("currency", "missing")
	}
	return currency("currency", c.Currency, false)
}

// Validate implements commandbus.Validator.
func (c Deposit) Validate() error {
	return first(account(c.AccountID), positive("amount", c.Amount), currency("currency", c.Currency, true))
}

// Validate implements commandbus.Validator.
func (c Withdraw) Validate() error {
	return first(account(c.AccountID), positive("amount", c.Amount), currency("currency", c.Currency, true))
}

// Validate implements commandbus.Validator.
func (c Freeze) Validate() error {
	return first(account(c.AccountID), domain.ValidateText("reason", c.Reason, domain.MaxReasonLength, false))
}

// Validate implements commandbus.Validator.
func (c Unfreeze) Validate() error { return account(c.AccountID) }

// Validate implements commandbus.Validator.
func (c CloseAccount) Validate() error { return account(c.AccountID) }

// Validate implements commandbus.Validator.
func (c RequestTransfer) Validate() error {
	switch {
	case c.From == uuid.Nil:
		return invalid("from", "missing")
	case c.To == uuid.Nil:
		return invalid("to", "missing")
	case c.From == c.To:
		return invalid("to", "same account as from")
	}
	return positive("amount", c.Amount)
}

// FieldError names the request field an error is about (for example the
// "to" account of a transfer that does not exist).
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }

// Unwrap returns the error.
func (e *FieldError) Unwrap() error { return e.Err }

// RegisterCommands registers the handlers of the bank's commands on bus.
// They pass the command ID the bus puts in the context on to the bank, so
// that the events' IDs derive from it and a repeated command is applied
// once (see aggregate.WithCommandID). The commands on an existing account
// go straight to the account repository (commandbus.HandleWith); opening
// an account and requesting a transfer go through the Bank, which names
// the new stream.
func RegisterCommands(bus *commandbus.Bus, bank *domain.Bank) error {
	h := handlers{bank: bank}
	accounts := bank.Accounts()
	return errors.Join(
		commandbus.Register(bus, h.open),
		commandbus.Register(bus, commandbus.HandleWith(accounts, h.deposit)),
		commandbus.Register(bus, commandbus.HandleWith(accounts, h.withdraw)),
		commandbus.Register(bus, commandbus.HandleWith(accounts, freeze)),
		commandbus.Register(bus, commandbus.HandleWith(accounts, unfreeze)),
		commandbus.Register(bus, commandbus.HandleWith(accounts, closeAccount)),
		commandbus.Register(bus, h.transfer),
	)
}

type handlers struct{ bank *domain.Bank }

func commandID(ctx context.Context) uuid.UUID {
	id, _ := commandbus.CommandIDFrom(ctx)
	return id
}

func wrap(r domain.Result, err error) (commandbus.Result, error) {
	if err != nil {
		return commandbus.Result{}, err
	}
	return commandbus.Result{StreamID: r.StreamID, Version: r.Version, Position: r.Position, Duplicate: r.Duplicate}, nil
}

func (h handlers) open(ctx context.Context, c OpenAccount) (commandbus.Result, error) {
	return wrap(h.bank.OpenAccount(ctx, domain.OpenAccount{Owner: c.Owner, Principal: c.Principal, Currency: c.Currency, OverdraftLimit: c.OverdraftLimit}, commandID(ctx)))
}

// currencyOf returns c, or the account's currency when c is empty. An
// account's currency never changes, so reading it before the command is
// safe.
func (h handlers) currencyOf(ctx context.Context, field string, id uuid.UUID, c, by string) (string, error) {
	if c != "" {
		return c, nil
	}
	a, _, err := h.bank.Account(ctx, id)
	if err == nil && a.Principal != by {
		// Another's account answers as one that does not exist.
		err = fmt.Errorf("%w: %s", domain.ErrAccountNotFound, id)
	}
	if err != nil {
		return "", &FieldError{Field: field, Err: err}
	}
	return a.Currency, nil
}

// The commands on an account, as the account repository takes them: the
// account's stream and the decider's command.

func (h handlers) deposit(ctx context.Context, c Deposit) (string, domain.AccountCommand, error) {
	cur, err := h.currencyOf(ctx, "id", c.AccountID, c.Currency, c.By)
	return domain.AccountStream(c.AccountID), domain.Deposit{Amount: c.Amount, Currency: cur, By: c.By}, err
}

func (h handlers) withdraw(ctx context.Context, c Withdraw) (string, domain.AccountCommand, error) {
	cur, err := h.currencyOf(ctx, "id", c.AccountID, c.Currency, c.By)
	return domain.AccountStream(c.AccountID), domain.Withdraw{Amount: c.Amount, Currency: cur, By: c.By}, err
}

func freeze(_ context.Context, c Freeze) (string, domain.AccountCommand, error) {
	return domain.AccountStream(c.AccountID), domain.Freeze{Reason: c.Reason, By: c.By}, nil
}

func unfreeze(_ context.Context, c Unfreeze) (string, domain.AccountCommand, error) {
	return domain.AccountStream(c.AccountID), domain.Unfreeze{By: c.By}, nil
}

func closeAccount(_ context.Context, c CloseAccount) (string, domain.AccountCommand, error) {
	return domain.AccountStream(c.AccountID), domain.Close{By: c.By}, nil
}

// transfer checks that both accounts exist and hold the same currency:
// what can never change about them. Whether the source has the money, or
// the target is frozen, is the transfer process's business: a transfer
// that fails there is rejected or refunded.
func (h handlers) transfer(ctx context.Context, c RequestTransfer) (commandbus.Result, error) {
	from, _, err := h.bank.Account(ctx, c.From)
	if err == nil && from.Principal != c.By {
		// Another's account is one the caller cannot see.
		err = fmt.Errorf("%w: %s", domain.ErrAccountNotFound, c.From)
	}
	if err != nil {
		return commandbus.Result{}, &FieldError{Field: "from", Err: err}
	}
	to, _, err := h.bank.Account(ctx, c.To)
	if err != nil {
		return commandbus.Result{}, &FieldError{Field: "to", Err: err}
	}
	if from.Currency != to.Currency {
		return commandbus.Result{}, &FieldError{Field: "to", Err: &domain.CurrencyMismatchError{Account: to.Currency, Got: from.Currency}}
	}
	return wrap(h.bank.RequestTransfer(ctx, domain.RequestTransfer{From: c.From, To: c.To, Amount: c.Amount, Currency: from.Currency, Principal: c.By}, commandID(ctx)))
}
