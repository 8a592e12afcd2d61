package domain

import (
	"errors"
	"fmt"
)

// Errors of rejected commands. Match them with errors.Is. The comments
// suggest the HTTP status an API maps each one to.
var (
	// ErrAccountNotFound: the account was never opened (404).
	ErrAccountNotFound error = &notFoundError{"bank: account not found"}
	// ErrTransferNotFound: no transfer has the ID (404).
	ErrTransferNotFound error = &notFoundError{"bank: transfer not found"}
	// ErrAlreadyOpen: an account with the ID exists already (409).
	ErrAlreadyOpen = errors.New("bank: account already open")
	// ErrAccountFrozen: the account is frozen and takes no deposits,
	// withdrawals or closing until it is unfrozen (409).
	ErrAccountFrozen = errors.New("bank: account frozen")
	// ErrAccountClosed: the account is closed and accepts nothing (409).
	ErrAccountClosed = errors.New("bank: account closed")
	// ErrNonZeroBalance: only an account with a zero balance can be
	// closed (409).
	ErrNonZeroBalance = errors.New("bank: balance is not zero")
	// ErrTransferPending: an outgoing transfer of the account is still in
	// flight, so the account cannot be closed yet (409).
	ErrTransferPending = errors.New("bank: outgoing transfer in flight")
	// ErrInsufficientFunds: the withdrawal would take the balance below
	// minus the overdraft limit (422). The error is an
	// *InsufficientFundsError.
	ErrInsufficientFunds = errors.New("bank: insufficient funds")
	// ErrCurrencyMismatch: the amount's currency is not the account's
	// (422).
	ErrCurrencyMismatch = errors.New("bank: currency mismatch")
	// ErrInvalidAmount: an amount is zero, negative or above MaxAmount.
	// It always comes wrapped in a *ValidationError (400).
	ErrInvalidAmount = errors.New("bank: amount must be between 1 and MaxAmount")
	// ErrBalanceOverflow: the balance would exceed what an int64 of minor
	// units holds (422).
	ErrBalanceOverflow = errors.New("bank: balance would overflow")
	// ErrTransferState: the transfer is not in a state that allows the
	// command (409). Only the transfer process sends such commands.
	ErrTransferState = errors.New("bank: transfer in the wrong state")
	// ErrUnknownCommand: a decider got a command type it does not know.
	ErrUnknownCommand = errors.New("bank: unknown command")
	// ErrValidation matches every *ValidationError (400).
	ErrValidation = errors.New("bank: invalid request")
)

// ValidationError reports a malformed command: the field, and why.
type ValidationError struct {
	// Field is the command field at fault, as an API names it (for
	// example "currency" or "amount").
	Field string
	// Reason says what is wrong with it.
	Reason string
	// Err is a more specific sentinel, such as ErrInvalidAmount, or nil.
	Err error
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("bank: invalid %s: %s", e.Field, e.Reason)
}

// Unwrap returns the more specific sentinel, if any.
func (e *ValidationError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrValidation) true.
func (e *ValidationError) Is(target error) bool { return target == ErrValidation }

// InvalidArgument reports that the caller's input was at fault (see
// querybus.Outcome): a query refused with it is logged at Info.
func (e *ValidationError) InvalidArgument() bool { return true }

// InsufficientFundsError rejects a withdrawal that would take the balance
// below minus the overdraft limit. It matches ErrInsufficientFunds.
type InsufficientFundsError struct {
	// Balance and OverdraftLimit are the account's, Amount the withdrawal.
	Balance, OverdraftLimit, Amount int64
}

func (e *InsufficientFundsError) Error() string {
	return fmt.Sprintf("bank: insufficient funds: cannot withdraw %d from a balance of %d with an overdraft limit of %d",
		e.Amount, e.Balance, e.OverdraftLimit)
}

// Is makes errors.Is(err, ErrInsufficientFunds) true.
func (e *InsufficientFundsError) Is(target error) bool { return target == ErrInsufficientFunds }

// CurrencyMismatchError rejects an amount in another currency than the
// account's. It matches ErrCurrencyMismatch.
type CurrencyMismatchError struct {
	// Account is the account's currency, Got the command's.
	Account, Got string
}

func (e *CurrencyMismatchError) Error() string {
	return fmt.Sprintf("bank: currency mismatch: the account holds %s, not %s", e.Account, e.Got)
}

// Is makes errors.Is(err, ErrCurrencyMismatch) true.
func (e *CurrencyMismatchError) Is(target error) bool { return target == ErrCurrencyMismatch }

// errorCodes maps each sentinel to its code, most specific first.
var errorCodes = []struct {
	err  error
	code string
}{
	{ErrInvalidAmount, "invalid_amount"},
	{ErrValidation, "invalid_request"},
	{ErrAccountNotFound, "account_not_found"},
	{ErrTransferNotFound, "transfer_not_found"},
	{ErrAlreadyOpen, "account_already_open"},
	{ErrAccountFrozen, "account_frozen"},
	{ErrAccountClosed, "account_closed"},
	{ErrNonZeroBalance, "non_zero_balance"},
	{ErrTransferPending, "transfer_pending"},
	{ErrInsufficientFunds, "insufficient_funds"},
	{ErrCurrencyMismatch, "currency_mismatch"},
	{ErrBalanceOverflow, "balance_overflow"},
	{ErrTransferState, "transfer_state"},
	{ErrUnknownCommand, "unknown_command"},
}

// ErrorCode returns a stable, machine-readable reason for a domain error
// (for example "insufficient_funds"), or "" when err is none of the
// package's errors. Transfers record it as the reason of a rejection or
// refund.
func ErrorCode(err error) string {
	for _, c := range errorCodes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return ""
}

// notFoundError is a "no such thing" answer; NotFound lets logging
// middleware tell it from a fault.
type notFoundError struct{ msg string }

func (e *notFoundError) Error() string { return e.msg }

// NotFound reports that the thing asked for does not exist.
func (e *notFoundError) NotFound() bool { return true }
