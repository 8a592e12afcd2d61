package domain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/eventstore"
)

// DefaultProcessName is the checkpoint name of a TransferProcess.
const DefaultProcessName = "bank.transfer-process"

// saveEvery bounds how many records the process passes over without
// saving its checkpoint. Records it acts on are checkpointed at once.
const saveEvery = 256

// Steps of a transfer, which name the commands the process sends (see
// StepCommandID).
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

// StepCommandID returns the command ID of one step of a transfer: the
// UUIDv5 of the step's name in the transfer ID's namespace. Every attempt
// at a step sends the same ID, so the repository applies the step once and
// answers every later attempt with the first outcome.
func StepCommandID(transferID uuid.UUID, step string) uuid.UUID {
	return uuid.NewSHA1(transferID, []byte(step))
}

// ProcessOption configures a TransferProcess.
type ProcessOption func(*TransferProcess)

// WithProcessName sets the checkpoint name (DefaultProcessName).
func WithProcessName(name string) ProcessOption {
	return func(p *TransferProcess) { p.name = name }
}

// WithProcessLogger sets the logger (slog.Default() otherwise).
func WithProcessLogger(l *slog.Logger) ProcessOption {
	return func(p *TransferProcess) { p.logger = l }
}

// TransferProcess carries transfers out. It follows the store's feed from
// its checkpoint and, for each event of a transfer that is still the
// transfer's latest, takes the next step:
//
//	requested      debit the source; record SourceDebited, or
//	               TransferRejected when the source refuses
//	debited        credit the target; record TransferCompleted, or
//	               CreditFailed when the target refuses
//	credit failed  refund the source; record TransferRefunded
//	completed      settle the transfer on the source
//
// Each step is a command with a derived ID (StepCommandID), so a step
// repeated after a crash does nothing new. The process decides from the
// transfer's recorded state, never from the event in hand, so a recorded
// decision (say, to refund) is never taken again differently (say, by a
// credit that the target would now accept); and it skips events that a
// later one supersedes. Run one TransferProcess per store and checkpoint
// name at a time.
type TransferProcess struct {
	bank        *Bank
	checkpoints Checkpoints
	name        string
	logger      *slog.Logger
}

// NewTransferProcess returns a process that sends its commands through
// bank and keeps its place in checkpoints.
func NewTransferProcess(bank *Bank, checkpoints Checkpoints, opts ...ProcessOption) (*TransferProcess, error) {
	if bank == nil || checkpoints == nil {
		return nil, errors.New("bank: transfer process needs a bank and checkpoints")
	}
	p := &TransferProcess{bank: bank, checkpoints: checkpoints, name: DefaultProcessName}
	for _, o := range opts {
		o(p)
	}
	if p.logger == nil {
		p.logger = slog.Default()
	}
	if p.name == "" {
		return nil, &ValidationError{Field: "name", Reason: "empty"}
	}
	return p, nil
}

// Name returns the process's checkpoint name.
func (p *TransferProcess) Name() string { return p.name }

// Run follows the feed from the checkpoint and handles every record until
// ctx ends (then it returns nil) or handling fails (then it returns the
// error; the checkpoint is before the failed record, so running again
// resumes there).
func (p *TransferProcess) Run(ctx context.Context) error {
	_, err := p.follow(ctx, func(eventstore.Position, eventstore.Position) bool { return false })
	if err != nil && ctx.Err() != nil {
		return nil
	}
	return err
}

// Drain handles every record up to the feed's head, and the records its
// own steps append, until no transfer has a step left to take; it returns
// how many records it read. It is Run for tests and tools: it returns
// instead of waiting for new records.
func (p *TransferProcess) Drain(ctx context.Context) (int, error) {
	head, err := p.bank.store.Head(ctx)
	if err != nil {
		return 0, fmt.Errorf("bank: transfer process: read the feed's head: %w", err)
	}
	from, err := p.checkpoints.Load(ctx, p.name)
	if err != nil {
		return 0, fmt.Errorf("bank: transfer process: %w", err)
	}
	if !head.After(from) {
		return 0, nil
	}
	// Done once the feed is read past the head and past every event the
	// process itself appended.
	return p.follow(ctx, func(at, written eventstore.Position) bool {
		return !at.Before(head) && !at.Before(written)
	})
}

// follow handles the feed from the checkpoint until done says so after a
// record, ctx ends or handling fails, and saves the checkpoint on the
// way.
func (p *TransferProcess) follow(ctx context.Context, done func(at, written eventstore.Position) bool) (int, error) {
	from, err := p.checkpoints.Load(ctx, p.name)
	if err != nil {
		return 0, fmt.Errorf("bank: transfer process: %w", err)
	}
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		n       int
		saved   = from
		at      = from
		written eventstore.Position
		unsaved int
	)
	save := func(ctx context.Context) error {
		if at == saved {
			return nil
		}
		if err := p.checkpoints.Save(ctx, p.name, at); err != nil {
			return fmt.Errorf("bank: transfer process: %w", err)
		}
		saved, unsaved = at, 0
		return nil
	}
	for rec, err := range p.bank.store.Subscribe(subCtx, from) {
		if err != nil {
			return n, errors.Join(fmt.Errorf("bank: transfer process: read the feed after %s: %w", at, err), p.saveDetached(ctx, save))
		}
		n++
		pos, acted, err := p.handle(ctx, rec)
		if err != nil {
			return n, errors.Join(err, p.saveDetached(ctx, save))
		}
		at = rec.Position
		if pos.After(written) {
			written = pos
		}
		unsaved++
		if acted || unsaved >= saveEvery {
			if err := save(ctx); err != nil {
				return n, err
			}
		}
		if done(at, written) {
			break
		}
	}
	if err := p.saveDetached(ctx, save); err != nil {
		return n, err
	}
	return n, ctx.Err()
}

// saveDetached saves the checkpoint even when ctx has ended.
func (p *TransferProcess) saveDetached(ctx context.Context, save func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return save(ctx)
}

// Handle reacts to one record of the feed, without touching the
// checkpoint: it takes the transfer's next step when rec is an event of a
// transfer and still its latest. Handling a record again is harmless.
func (p *TransferProcess) Handle(ctx context.Context, rec eventstore.Record) error {
	_, _, err := p.handle(ctx, rec)
	return err
}

// handle returns the feed position of the last event it appended (zero
// when none), and whether it acted.
func (p *TransferProcess) handle(ctx context.Context, rec eventstore.Record) (eventstore.Position, bool, error) {
	id, ok := ParseTransferStream(rec.StreamID)
	if !ok {
		return eventstore.Position{}, false, nil
	}
	t, version, err := p.bank.transfers.Load(ctx, rec.StreamID)
	if err != nil {
		return eventstore.Position{}, false, fmt.Errorf("bank: transfer process: load transfer %s: %w", id, err)
	}
	if version != rec.Version || (t.Status.Final() && t.Status != StatusCompleted) {
		// A later event supersedes this one, and the process handles it
		// when it gets there; or the transfer is over.
		return eventstore.Position{}, false, nil
	}
	s := stepper{p: p, t: t, md: eventstore.Metadata{
		eventstore.MetaCorrelationID: id.String(),
		eventstore.MetaCausationID:   rec.ID.String(),
	}}
	if err := s.next(ctx); err != nil {
		return s.written, true, fmt.Errorf("bank: transfer process: transfer %s (%s): %w", id, t.Status, err)
	}
	return s.written, true, nil
}

// stepper takes one step of one transfer.
type stepper struct {
	p       *TransferProcess
	t       Transfer
	md      eventstore.Metadata
	written eventstore.Position
}

func (s *stepper) next(ctx context.Context) error {
	t := s.t
	switch t.Status {
	case StatusRequested:
		err := s.account(ctx, t.From, StepDebit, DebitForTransfer{TransferID: t.ID, Amount: t.Amount, Currency: t.Currency})
		if errors.Is(err, aggregate.ErrRejected) {
			s.p.logger.Info("bank: transfer rejected", "transfer", t.ID, "error", err)
			return s.transfer(ctx, StepReject, RejectTransfer{Reason: reason(err)})
		}
		if err != nil {
			return err
		}
		return s.transfer(ctx, StepRecordDebit, RecordDebit{})
	case StatusDebited:
		err := s.account(ctx, t.To, StepCredit, CreditForTransfer{TransferID: t.ID, Amount: t.Amount, Currency: t.Currency})
		if errors.Is(err, aggregate.ErrRejected) {
			s.p.logger.Info("bank: transfer credit refused, refunding", "transfer", t.ID, "error", err)
			return s.transfer(ctx, StepCreditFailed, RecordCreditFailure{Reason: reason(err)})
		}
		if err != nil {
			return err
		}
		return s.transfer(ctx, StepComplete, CompleteTransfer{})
	case StatusCreditFailed:
		// The source keeps the transfer pending, so it can be neither
		// closed nor overflowed: a refusal here is a bug, reported as an
		// error rather than hidden.
		if err := s.account(ctx, t.From, StepRefund, RefundTransfer{TransferID: t.ID}); err != nil {
			return err
		}
		return s.transfer(ctx, StepRecordRefund, RecordRefund{})
	case StatusCompleted:
		return s.account(ctx, t.From, StepSettle, SettleTransfer{TransferID: t.ID})
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

func (s *stepper) account(ctx context.Context, id uuid.UUID, step string, cmd AccountCommand) error {
	r, err := s.p.bank.accounts.Handle(ctx, AccountStream(id), cmd,
		aggregate.WithCommandID(StepCommandID(s.t.ID, step)), aggregate.WithMetadata(s.md))
	if err != nil {
		return fmt.Errorf("%s: %w", step, err)
	}
	s.wrote(r.Position)
	return nil
}

func (s *stepper) transfer(ctx context.Context, step string, cmd TransferCommand) error {
	r, err := s.p.bank.transfers.Handle(ctx, TransferStream(s.t.ID), cmd,
		aggregate.WithCommandID(StepCommandID(s.t.ID, step)), aggregate.WithMetadata(s.md))
	if err != nil {
		return fmt.Errorf("%s: %w", step, err)
	}
	s.wrote(r.Position)
	return nil
}

func (s *stepper) wrote(pos eventstore.Position) {
	if pos.After(s.written) {
		s.written = pos
	}
}
