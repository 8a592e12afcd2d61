package domain

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/saga"
)

// TransferSagaName is the name of the transfer process manager: its
// instances, checkpoints and leases are kept under it.
const TransferSagaName = "bank.transfer"

// EventTransferStep is the registered name of StepCommand in the
// process's command registry (the saga's outbox keeps it encoded).
const EventTransferStep = "bank.transfer-step"

// Steps of a transfer: each is one StepCommand the process sends.
const (
	StepDebit        = "debit"
	StepRecordDebit  = "record-debit"
	StepReject       = "reject"
	StepCredit       = "credit"
	StepComplete     = "complete"
	StepCreditFailed = "record-credit-failure"
	StepRefund       = "refund"
	StepRecordRefund = "record-refund"
	StepSettle       = "settle"
)

// TransferState is what the process keeps of one transfer: what to move,
// and the last step it sent.
type TransferState struct {
	ID       uuid.UUID `json:"id"`
	From     uuid.UUID `json:"from"`
	To       uuid.UUID `json:"to"`
	Amount   int64     `json:"amount"`
	Currency string    `json:"currency"`
	Step     string    `json:"step,omitempty"`
}

// StepCommand is one step of a transfer, as the process sends it: a
// command for the account Account (debit, credit, refund, settle) or for
// the transfer (the others). The dispatcher (see TransferProcess) turns it
// into the AccountCommand or TransferCommand of the step.
type StepCommand struct {
	Step       string    `json:"step"`
	TransferID uuid.UUID `json:"transfer_id"`
	Account    uuid.UUID `json:"account,omitzero"`
	Amount     int64     `json:"amount,omitempty"`
	Currency   string    `json:"currency,omitempty"`
	Reason     string    `json:"reason,omitempty"`
}

// TransferProcess carries transfers out: a saga runner with one instance
// per transfer ID. Build it with NewTransferProcess; Run follows the feed,
// Drain (for tests and tools) runs until nothing is left to do.
type TransferProcess = saga.Runner[TransferState]

// NewTransferProcess returns the process that carries out the transfers of
// bank, keeping its instances, outboxes and checkpoints in store
// (saga.NewMemoryStore, pgstore.NewSagaStore). opts configure the runner:
// saga.WithLease to run it in several processes, saga.WithLogger, ...
func NewTransferProcess(bank *Bank, store saga.Store, opts ...saga.RunnerOption) (*TransferProcess, error) {
	if bank == nil || store == nil {
		return nil, errors.New("bank: transfer process needs a bank and a saga store")
	}
	def, err := TransferSaga(bank.Registry())
	if err != nil {
		return nil, err
	}
	p, err := saga.NewRunner(def, store, bank.store, saga.DispatcherFunc(bank.dispatchStep), opts...)
	if err != nil {
		return nil, fmt.Errorf("bank: transfer process: %w", err)
	}
	return p, nil
}

// TransferSaga declares the transfer process over the bank's event
// registry (see Register). Each event of a transfer, and each account
// event a transfer caused, takes the transfer's next step:
//
//	requested           debit the source
//	source withdrawn    record SourceDebited
//	debit refused       record TransferRejected (and the instance is done)
//	debited             credit the target
//	target deposited    record TransferCompleted
//	credit refused      record CreditFailed
//	credit failed       refund the source
//	source refunded     record TransferRefunded (and the instance is done)
//	completed           settle the transfer on the source (and done)
//
// Every step is committed with the process's checkpoint and sends its
// command with an ID derived from the event that caused it
// (saga.CommandID), so a step sent again after a crash is answered with
// its first outcome and never moves money twice. A refused refund or
// settlement is a bug, not a business outcome: it parks the instance.
func TransferSaga(events *eventstore.Registry) (*saga.Definition[TransferState], error) {
	commands := eventstore.NewRegistry()
	if err := eventstore.Register[StepCommand](commands, EventTransferStep); err != nil {
		return nil, fmt.Errorf("bank: transfer process: %w", err)
	}
	byStream := func(rec eventstore.Record) string {
		if id, ok := ParseTransferStream(rec.StreamID); ok {
			return id.String()
		}
		return ""
	}
	byTransferID := func(id uuid.UUID) string {
		if id == uuid.Nil {
			return ""
		}
		return id.String()
	}
	return saga.New(TransferSagaName, events, commands,
		saga.On(func(rec eventstore.Record, _ TransferRequested) string { return byStream(rec) },
			func(_ context.Context, s *saga.Step[TransferState], e TransferRequested) error {
				*s.State() = TransferState{ID: e.TransferID, From: e.From, To: e.To, Amount: e.Amount, Currency: e.Currency}
				send(s, StepDebit, e.From)
				return nil
			}, saga.Starts()),
		saga.On(func(_ eventstore.Record, e Withdrawn) string { return byTransferID(e.TransferID) },
			func(_ context.Context, s *saga.Step[TransferState], _ Withdrawn) error {
				return after(s, StepDebit, StepRecordDebit)
			}),
		saga.On(func(rec eventstore.Record, _ SourceDebited) string { return byStream(rec) },
			func(_ context.Context, s *saga.Step[TransferState], _ SourceDebited) error {
				if err := expect(s, StepRecordDebit); err != nil {
					return err
				}
				send(s, StepCredit, s.State().To)
				return nil
			}),
		saga.On(func(_ eventstore.Record, e Deposited) string { return byTransferID(e.TransferID) },
			func(_ context.Context, s *saga.Step[TransferState], e Deposited) error {
				if e.Refund {
					return after(s, StepRefund, StepRecordRefund)
				}
				return after(s, StepCredit, StepComplete)
			}),
		saga.On(func(rec eventstore.Record, _ CreditFailed) string { return byStream(rec) },
			func(_ context.Context, s *saga.Step[TransferState], _ CreditFailed) error {
				if err := expect(s, StepCreditFailed); err != nil {
					return err
				}
				// The source keeps the transfer pending, so it can be
				// neither closed nor overflowed: a refusal is a bug.
				send(s, StepRefund, s.State().From)
				return nil
			}),
		saga.On(func(rec eventstore.Record, _ TransferCompleted) string { return byStream(rec) },
			func(_ context.Context, s *saga.Step[TransferState], _ TransferCompleted) error {
				if err := expect(s, StepComplete); err != nil {
					return err
				}
				send(s, StepSettle, s.State().From)
				s.Complete()
				return nil
			}),
		saga.On(func(rec eventstore.Record, _ TransferRejected) string { return byStream(rec) },
			func(_ context.Context, s *saga.Step[TransferState], _ TransferRejected) error {
				s.Complete()
				return nil
			}),
		saga.On(func(rec eventstore.Record, _ TransferRefunded) string { return byStream(rec) },
			func(_ context.Context, s *saga.Step[TransferState], _ TransferRefunded) error {
				s.Complete()
				return nil
			}),
		saga.OnRejected(func(_ context.Context, s *saga.Step[TransferState], r saga.Rejection) error {
			c, ok := r.Command.(StepCommand)
			if !ok {
				return fmt.Errorf("bank: transfer process: rejected %T: %w", r.Command, r.Err)
			}
			switch c.Step {
			case StepDebit:
				s.State().Step = StepReject
				s.Send(StepCommand{Step: StepReject, TransferID: c.TransferID, Reason: reason(r.Err)})
			case StepCredit:
				s.State().Step = StepCreditFailed
				s.Send(StepCommand{Step: StepCreditFailed, TransferID: c.TransferID, Reason: reason(r.Err)})
			default:
				return fmt.Errorf("bank: transfer process: %s of transfer %s refused: %w", c.Step, c.TransferID, r.Err)
			}
			return nil
		}),
	)
}

// send sends the step of the instance's transfer; account is the account
// of an account step (uuid.Nil for a transfer step).
func send(s *saga.Step[TransferState], step string, account uuid.UUID) {
	st := s.State()
	st.Step = step
	c := StepCommand{Step: step, TransferID: st.ID, Account: account}
	if step == StepDebit || step == StepCredit {
		c.Amount, c.Currency = st.Amount, st.Currency
	}
	s.Send(c)
}

// after sends next, which follows the step prev.
func after(s *saga.Step[TransferState], prev, next string) error {
	if err := expect(s, prev); err != nil {
		return err
	}
	send(s, next, uuid.Nil)
	return nil
}

// expect checks that the last step sent is step: an event that does not
// follow it is a bug (it parks the instance).
func expect(s *saga.Step[TransferState], step string) error {
	if got := s.State().Step; got != step {
		return fmt.Errorf("bank: transfer process: transfer %s: event after step %q, want after %q", s.ID(), got, step)
	}
	return nil
}

// reason returns the ErrorCode of a rejection, or "rejected".
func reason(err error) string {
	if c := ErrorCode(err); c != "" {
		return c
	}
	return "rejected"
}

// dispatchStep handles a StepCommand the process sends: on the account or
// the transfer, with the command ID the saga derived (in ctx), so that a
// step sent twice takes effect once. Its events are correlated with the
// transfer and caused by the event that took the step.
func (b *Bank) dispatchStep(ctx context.Context, cmd any) (commandbus.Result, error) {
	c, ok := cmd.(StepCommand)
	if !ok {
		return commandbus.Result{}, fmt.Errorf("%w: %T", ErrUnknownCommand, cmd)
	}
	md := eventstore.Metadata{eventstore.MetaCorrelationID: c.TransferID.String()}
	if v := commandbus.CausationIDFrom(ctx); v != "" {
		md[eventstore.MetaCausationID] = v
	}
	opts := []aggregate.HandleOption{aggregate.WithMetadata(md)}
	if id, ok := commandbus.CommandIDFrom(ctx); ok {
		opts = append(opts, aggregate.WithCommandID(id))
	}
	var (
		acc AccountCommand
		tr  TransferCommand
	)
	switch c.Step {
	case StepDebit:
		acc = DebitForTransfer{TransferID: c.TransferID, Amount: c.Amount, Currency: c.Currency}
	case StepCredit:
		acc = CreditForTransfer{TransferID: c.TransferID, Amount: c.Amount, Currency: c.Currency}
	case StepRefund:
		acc = RefundTransfer{TransferID: c.TransferID}
	case StepSettle:
		acc = SettleTransfer{TransferID: c.TransferID}
	case StepRecordDebit:
		tr = RecordDebit{}
	case StepReject:
		tr = RejectTransfer{Reason: c.Reason}
	case StepComplete:
		tr = CompleteTransfer{}
	case StepCreditFailed:
		tr = RecordCreditFailure{Reason: c.Reason}
	case StepRecordRefund:
		tr = RecordRefund{}
	default:
		return commandbus.Result{}, fmt.Errorf("%w: transfer step %q", ErrUnknownCommand, c.Step)
	}
	if acc != nil {
		r, err := b.accounts.Handle(ctx, AccountStream(c.Account), acc, opts...)
		if err != nil {
			return commandbus.Result{}, fmt.Errorf("%s: %w", c.Step, err)
		}
		return commandbus.Result{StreamID: r.StreamID, Version: r.Version, Position: r.Position, Duplicate: r.Duplicate}, nil
	}
	r, err := b.transfers.Handle(ctx, TransferStream(c.TransferID), tr, opts...)
	if err != nil {
		return commandbus.Result{}, fmt.Errorf("%s: %w", c.Step, err)
	}
	return commandbus.Result{StreamID: r.StreamID, Version: r.Version, Position: r.Position, Duplicate: r.Duplicate}, nil
}
