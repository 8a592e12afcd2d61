package domain

import (
	"fmt"

	"github.com/google/uuid"

	"github.com/eskit/eskit/aggregate"
)

// TransferStatus is where a transfer is in its life.
type TransferStatus string

// The statuses of a transfer. The zero status is a transfer never
// requested.
const (
	// StatusRequested: accepted, the source is not debited yet.
	StatusRequested TransferStatus = "requested"
	// StatusRejected: the source refused the debit; nothing moved (final).
	StatusRejected TransferStatus = "rejected"
	// StatusDebited: the amount left the source; the target is next.
	StatusDebited TransferStatus = "debited"
	// StatusCompleted: the target received the amount (final).
	StatusCompleted TransferStatus = "completed"
	// StatusCreditFailed: the target refused the amount; the source gets
	// it back next.
	StatusCreditFailed TransferStatus = "credit_failed"
	// StatusRefunded: the source got the amount back (final).
	StatusRefunded TransferStatus = "refunded"
)

// Final reports whether a transfer in status s is over.
func (s TransferStatus) Final() bool {
	return s == StatusRejected || s == StatusCompleted || s == StatusRefunded
}

// Transfer is the state of a transfer of Amount (minor units of Currency)
// from the account From to the account To.
type Transfer struct {
	ID       uuid.UUID      `json:"id"`
	Status   TransferStatus `json:"status,omitempty"`
	From     uuid.UUID      `json:"from"`
	To       uuid.UUID      `json:"to"`
	Amount   int64          `json:"amount,omitempty"`
	Currency string         `json:"currency,omitempty"`
	// Principal is the caller that requested it (the source account's).
	Principal string `json:"principal,omitempty"`
	// Reason is the ErrorCode of the rejection or of the failed credit.
	Reason string `json:"reason,omitempty"`
}

// TransferCommand is a command for a transfer: RequestTransfer from a
// client, the others from the transfer process.
type TransferCommand interface{ isTransferCommand() }

// RequestTransfer asks for a new transfer with the ID, on behalf of
// Principal (who must own From: the caller checks, since the transfer
// cannot see the account).
type RequestTransfer struct {
	ID        uuid.UUID
	From, To  uuid.UUID
	Amount    int64
	Currency  string
	Principal string
}

// RecordDebit records that the source was debited.
type RecordDebit struct{}

// RejectTransfer records that the source refused the debit.
type RejectTransfer struct{ Reason string }

// CompleteTransfer records that the target was credited.
type CompleteTransfer struct{}

// RecordCreditFailure records that the target refused the credit.
type RecordCreditFailure struct{ Reason string }

// RecordRefund records that the source got the amount back.
type RecordRefund struct{}

func (RequestTransfer) isTransferCommand()     {}
func (RecordDebit) isTransferCommand()         {}
func (RejectTransfer) isTransferCommand()      {}
func (CompleteTransfer) isTransferCommand()    {}
func (RecordCreditFailure) isTransferCommand() {}
func (RecordRefund) isTransferCommand()        {}

// TransferEvent is an event of a transfer stream.
type TransferEvent interface{ isTransferEvent() }

// TransferRequested is the first event of every transfer.
type TransferRequested struct {
	TransferID uuid.UUID `json:"transfer_id"`
	From       uuid.UUID `json:"from"`
	To         uuid.UUID `json:"to"`
	Amount     int64     `json:"amount"`
	Currency   string    `json:"currency"`
	Principal  string    `json:"principal,omitempty"`
}

// TransferRejected: the source refused the debit (Reason is an
// ErrorCode); nothing moved.
type TransferRejected struct {
	Reason string `json:"reason"`
}

// SourceDebited: the amount left the source account.
type SourceDebited struct{}

// TransferCompleted: the target account received the amount.
type TransferCompleted struct{}

// CreditFailed: the target refused the amount (Reason is an ErrorCode);
// the source is refunded next.
type CreditFailed struct {
	Reason string `json:"reason"`
}

// TransferRefunded: the source account got the amount back.
type TransferRefunded struct{}

func (TransferRequested) isTransferEvent() {}
func (TransferRejected) isTransferEvent()  {}
func (SourceDebited) isTransferEvent()     {}
func (TransferCompleted) isTransferEvent() {}
func (CreditFailed) isTransferEvent()      {}
func (TransferRefunded) isTransferEvent()  {}

// TransferDecider decides transfer commands. It is stateless; use its zero
// value.
type TransferDecider struct{}

var _ aggregate.Decider[Transfer, TransferCommand, TransferEvent] = TransferDecider{}

// Initial implements aggregate.Decider: a transfer never requested.
func (TransferDecider) Initial() Transfer { return Transfer{} }

// Decide implements aggregate.Decider. Every command but RequestTransfer
// moves the transfer one step along its life and is refused
// (ErrTransferState) in any other state than the one the step starts from.
func (TransferDecider) Decide(t Transfer, cmd TransferCommand) ([]TransferEvent, error) {
	switch c := cmd.(type) {
	case RequestTransfer:
		if err := validateRequest(c); err != nil {
			return nil, err
		}
		if t.Status != "" {
			return nil, fmt.Errorf("%w: transfer %s was already requested", ErrTransferState, t.ID)
		}
		return []TransferEvent{TransferRequested{TransferID: c.ID, From: c.From, To: c.To, Amount: c.Amount, Currency: c.Currency, Principal: c.Principal}}, nil
	case RecordDebit:
		return step(t, StatusRequested, SourceDebited{})
	case RejectTransfer:
		return step(t, StatusRequested, TransferRejected{Reason: c.Reason})
	case CompleteTransfer:
		return step(t, StatusDebited, TransferCompleted{})
	case RecordCreditFailure:
		return step(t, StatusDebited, CreditFailed{Reason: c.Reason})
	case RecordRefund:
		return step(t, StatusCreditFailed, TransferRefunded{})
	}
	return nil, fmt.Errorf("%w: %T", ErrUnknownCommand, cmd)
}

// step returns e when the transfer is in status from.
func step(t Transfer, from TransferStatus, e TransferEvent) ([]TransferEvent, error) {
	if t.Status == "" {
		return nil, ErrTransferNotFound
	}
	if t.Status != from {
		return nil, fmt.Errorf("%w: transfer %s is %s, not %s", ErrTransferState, t.ID, t.Status, from)
	}
	return []TransferEvent{e}, nil
}

func validateRequest(c RequestTransfer) error {
	switch {
	case c.ID == uuid.Nil:
		return &ValidationError{Field: "id", Reason: "missing"}
	case c.From == uuid.Nil:
		return &ValidationError{Field: "from", Reason: "missing"}
	case c.To == uuid.Nil:
		return &ValidationError{Field: "to", Reason: "missing"}
	case c.From == c.To:
		return &ValidationError{Field: "to", Reason: "same account as from"}
	}
	return first(validateAmount("amount", c.Amount), validateCurrency("currency", c.Currency), validatePrincipal("principal", c.Principal))
}

// Evolve implements aggregate.Decider.
func (TransferDecider) Evolve(t Transfer, e TransferEvent) Transfer {
	switch e := e.(type) {
	case TransferRequested:
		t = Transfer{ID: e.TransferID, Status: StatusRequested, From: e.From, To: e.To, Amount: e.Amount, Currency: e.Currency, Principal: e.Principal}
	case TransferRejected:
		t.Status, t.Reason = StatusRejected, e.Reason
	case SourceDebited:
		t.Status = StatusDebited
	case TransferCompleted:
		t.Status = StatusCompleted
	case CreditFailed:
		t.Status, t.Reason = StatusCreditFailed, e.Reason
	case TransferRefunded:
		t.Status = StatusRefunded
	}
	return t
}
