package domain

import (
	"errors"
	"strings"

	"github.com/google/uuid"

	"github.com/eskit/eskit/eventstore"
)

// Stream name prefixes: an account's stream is "account-<uuid>", a
// transfer's "transfer-<uuid>".
const (
	AccountStreamPrefix  = "account-"
	TransferStreamPrefix = "transfer-"
)

// AccountStream returns the stream of the account.
func AccountStream(id uuid.UUID) string { return AccountStreamPrefix + id.String() }

// TransferStream returns the stream of the transfer.
func TransferStream(id uuid.UUID) string { return TransferStreamPrefix + id.String() }

// ParseAccountStream returns the account ID of an account stream, and false
// for any other stream.
func ParseAccountStream(stream string) (uuid.UUID, bool) {
	return parseStream(stream, AccountStreamPrefix)
}

// ParseTransferStream returns the transfer ID of a transfer stream, and
// false for any other stream.
func ParseTransferStream(stream string) (uuid.UUID, bool) {
	return parseStream(stream, TransferStreamPrefix)
}

func parseStream(stream, prefix string) (uuid.UUID, bool) {
	rest, ok := strings.CutPrefix(stream, prefix)
	if !ok {
		return uuid.Nil, false
	}
	id, err := uuid.Parse(rest)
	if err != nil || id.String() != rest {
		return uuid.Nil, false
	}
	return id, true
}

// Event type names, as stored.
const (
	EventAccountOpened     = "account.opened"
	EventDeposited         = "account.deposited"
	EventWithdrawn         = "account.withdrawn"
	EventAccountFrozen     = "account.frozen"
	EventAccountUnfrozen   = "account.unfrozen"
	EventAccountClosed     = "account.closed"
	EventTransferSettled   = "account.transfer_settled"
	EventTransferRequested = "transfer.requested"
	EventTransferRejected  = "transfer.rejected"
	EventSourceDebited     = "transfer.source_debited"
	EventTransferCompleted = "transfer.completed"
	EventCreditFailed      = "transfer.credit_failed"
	EventTransferRefunded  = "transfer.refunded"
)

// Register adds every event type of the bank to reg, under the names
// above. Decoding then yields the event structs as values (for example a
// Deposited, never a *Deposited).
func Register(reg *eventstore.Registry) error {
	return errors.Join(
		eventstore.Register[AccountOpened](reg, EventAccountOpened),
		eventstore.Register[Deposited](reg, EventDeposited),
		eventstore.Register[Withdrawn](reg, EventWithdrawn),
		eventstore.Register[AccountFrozen](reg, EventAccountFrozen),
		eventstore.Register[AccountUnfrozen](reg, EventAccountUnfrozen),
		eventstore.Register[AccountClosed](reg, EventAccountClosed),
		eventstore.Register[TransferSettled](reg, EventTransferSettled),
		eventstore.Register[TransferRequested](reg, EventTransferRequested),
		eventstore.Register[TransferRejected](reg, EventTransferRejected),
		eventstore.Register[SourceDebited](reg, EventSourceDebited),
		eventstore.Register[TransferCompleted](reg, EventTransferCompleted),
		eventstore.Register[CreditFailed](reg, EventCreditFailed),
		eventstore.Register[TransferRefunded](reg, EventTransferRefunded),
	)
}
