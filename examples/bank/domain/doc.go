// Package domain is the sample bank's write side, and a tour of eskit's
// concepts in one small domain.
//
// # Accounts
//
// An account is a decider (see aggregate.Decider) over the stream
// "account-<uuid>". It is opened with an owner, an ISO-4217-style currency
// code and an overdraft limit; it then takes deposits and withdrawals in
// integer minor units of its currency (never floats, never another
// currency, at most MaxAmount at a time), can be frozen and unfrozen, and
// can be closed once its balance is zero. Its balance never goes below
// minus its overdraft limit, and no arithmetic on it can overflow an int64.
//
// # Transfers
//
// A transfer moves money between two accounts. Two streams cannot be
// changed in one decision, so a transfer is a process: the TransferDecider
// (stream "transfer-<uuid>") records where it is —
//
//	requested ─► source debited ─► completed
//	    │               │
//	    ▼               ▼
//	 rejected      credit failed ─► refunded
//
// — and the transfer process (TransferSaga, a saga with one instance per
// transfer; NewTransferProcess runs it) reacts to the transfer's events and
// to the account events the transfer caused by sending commands: it debits
// the source, credits the target, refunds the source when the credit is
// refused (its OnRejected step), and tells the source once the money
// arrived. Each step is committed with the process's checkpoint and sends
// its command with an ID the saga derives from the event that caused it,
// so a step sent again after a crash is answered with its first outcome
// instead of moving money twice: no money is created or lost, however often
// the process dies midway.
//
// While a transfer is in flight its source account remembers it as
// pending: the account cannot be closed, and deposits cannot grow its
// balance so far that the refund would overflow. A refund is accepted even
// by a frozen account, so a compensation never fails.
//
// # Errors
//
// Rejected commands return typed errors: a *ValidationError names the
// malformed field (an HTTP 400), ErrAccountNotFound and ErrTransferNotFound
// mean nothing exists under the ID (404), and the other sentinels break a
// business rule (409 for the state of the account, 422 for the request
// itself; see each error). ErrorCode gives a stable machine-readable reason
// for any of them.
//
// # The Bank
//
// Bank wires the repositories over an event store and offers the operations
// an API needs; Register adds the bank's event types to a registry for
// anything else (projections, tools) that decodes them.
package domain
