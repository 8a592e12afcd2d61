package domain_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/memstore"
	"github.com/eskit/eskit/examples/bank/domain"
)

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// tb is what the helpers need of *testing.T and *rapid.T.
type tb interface {
	Helper()
	Fatalf(format string, args ...any)
}

// bankEnv is a bank on an in-memory store, with its transfer process's
// checkpoints.
type bankEnv struct {
	t     tb
	store eventstore.Store
	bank  *domain.Bank
	cps   domain.Checkpoints
}

func newMemEnv(t tb) *bankEnv {
	t.Helper()
	return newEnv(t, memstore.New(), domain.NewMemoryCheckpoints())
}

func newEnv(t tb, store eventstore.Store, cps domain.Checkpoints) *bankEnv {
	t.Helper()
	b, err := domain.New(store)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if c, ok := t.(interface{ Cleanup(func()) }); ok {
		c.Cleanup(func() { _ = b.Close() })
	}
	return &bankEnv{t: t, store: store, bank: b, cps: cps}
}

// open opens an account and deposits funds into it when funds > 0.
func (e *bankEnv) open(currency string, overdraft, funds int64) uuid.UUID {
	e.t.Helper()
	ctx := context.Background()
	r, err := e.bank.OpenAccount(ctx, domain.OpenAccount{Owner: "owner", Currency: currency, OverdraftLimit: overdraft}, uuid.Nil)
	if err != nil {
		e.t.Fatalf("OpenAccount: %v", err)
	}
	if funds > 0 {
		if _, err := e.bank.Deposit(ctx, r.ID, domain.Deposit{Amount: funds, Currency: currency}, uuid.Nil); err != nil {
			e.t.Fatalf("Deposit: %v", err)
		}
	}
	return r.ID
}

func (e *bankEnv) transfer(from, to uuid.UUID, amount int64, currency string) uuid.UUID {
	e.t.Helper()
	r, err := e.bank.RequestTransfer(context.Background(), domain.RequestTransfer{From: from, To: to, Amount: amount, Currency: currency}, uuid.Nil)
	if err != nil {
		e.t.Fatalf("RequestTransfer: %v", err)
	}
	return r.ID
}

func (e *bankEnv) process(opts ...domain.ProcessOption) *domain.TransferProcess {
	e.t.Helper()
	p, err := domain.NewTransferProcess(e.bank, e.cps, append([]domain.ProcessOption{quiet}, opts...)...)
	if err != nil {
		e.t.Fatalf("NewTransferProcess: %v", err)
	}
	return p
}

func (e *bankEnv) drain() {
	e.t.Helper()
	if _, err := e.process().Drain(context.Background()); err != nil {
		e.t.Fatalf("Drain: %v", err)
	}
}

func (e *bankEnv) account(id uuid.UUID) domain.Account {
	e.t.Helper()
	a, _, err := e.bank.Account(context.Background(), id)
	if err != nil {
		e.t.Fatalf("Account %s: %v", id, err)
	}
	return a
}

func (e *bankEnv) transferState(id uuid.UUID) domain.Transfer {
	e.t.Helper()
	tr, _, err := e.bank.Transfer(context.Background(), id)
	if err != nil {
		e.t.Fatalf("Transfer %s: %v", id, err)
	}
	return tr
}

// legs counts, per transfer, the account events it caused.
type legs struct{ debits, credits, refunds, settles int }

func (e *bankEnv) legs() map[uuid.UUID]legs {
	e.t.Helper()
	recs, err := e.store.ReadAll(context.Background(), eventstore.Position{}, 1_000_000)
	if err != nil {
		e.t.Fatalf("ReadAll: %v", err)
	}
	out := map[uuid.UUID]legs{}
	for _, rec := range recs {
		v, err := e.bank.Registry().Decode(rec)
		if err != nil {
			e.t.Fatalf("Decode: %v", err)
		}
		switch ev := v.(type) {
		case domain.Withdrawn:
			if ev.TransferID != uuid.Nil {
				l := out[ev.TransferID]
				l.debits++
				out[ev.TransferID] = l
			}
		case domain.Deposited:
			if ev.TransferID != uuid.Nil {
				l := out[ev.TransferID]
				if ev.Refund {
					l.refunds++
				} else {
					l.credits++
				}
				out[ev.TransferID] = l
			}
		case domain.TransferSettled:
			l := out[ev.TransferID]
			l.settles++
			out[ev.TransferID] = l
		}
	}
	return out
}

// checkOutcome checks that a finished transfer moved money exactly as its
// final status says.
func (e *bankEnv) checkOutcome(id uuid.UUID, l legs) {
	e.t.Helper()
	tr := e.transferState(id)
	var want legs
	switch tr.Status {
	case domain.StatusCompleted:
		want = legs{debits: 1, credits: 1, settles: 1}
	case domain.StatusRefunded:
		want = legs{debits: 1, refunds: 1}
	case domain.StatusRejected:
	default:
		e.t.Fatalf("transfer %s ended %s", id, tr.Status)
	}
	if l != want {
		e.t.Fatalf("transfer %s ended %s (%s) with legs %+v, want %+v", id, tr.Status, tr.Reason, l, want)
	}
}

// waitFor reads the feed until a record matches, or fails the test after
// a generous deadline (a guard against hanging, not a timing assertion).
func waitFor(t testing.TB, store eventstore.Store, match func(eventstore.Record) bool) eventstore.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for rec, err := range store.Subscribe(ctx, eventstore.Position{}) {
		if err != nil {
			t.Fatalf("Subscribe: %v", err)
		}
		if match(rec) {
			return rec
		}
	}
	t.Fatalf("no matching record: %v", ctx.Err())
	return eventstore.Record{}
}

// quiet keeps the process's logs out of the test output.
var quiet = domain.WithProcessLogger(slog.New(slog.DiscardHandler))

var errCrash = errors.New("simulated crash")

// crashStore lets a number of appends through, then fails every append,
// as if the process had died. With after set, the last append allowed is
// written but reported as failed: the process dies after the command,
// before it learns the outcome.
type crashStore struct {
	eventstore.Store
	mu     sync.Mutex
	budget int
	after  bool
}

func (s *crashStore) Append(ctx context.Context, streamID string, expected eventstore.ExpectedVersion, events ...eventstore.Event) (eventstore.AppendResult, error) {
	s.mu.Lock()
	if s.budget == 0 {
		s.mu.Unlock()
		return eventstore.AppendResult{}, errCrash
	}
	s.budget--
	last := s.budget == 0 && s.after
	s.mu.Unlock()
	r, err := s.Store.Append(ctx, streamID, expected, events...)
	if err == nil && last {
		return eventstore.AppendResult{}, errCrash
	}
	return r, err
}

// crashCheckpoints fails every save after a number of them.
type crashCheckpoints struct {
	domain.Checkpoints
	mu     sync.Mutex
	budget int
}

func (c *crashCheckpoints) Save(ctx context.Context, name string, pos eventstore.Position) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.budget == 0 {
		return errCrash
	}
	c.budget--
	return c.Checkpoints.Save(ctx, name, pos)
}

// crashRun runs a transfer process that dies after appends appends (after
// the last one is written when after is set) or saves checkpoint saves,
// whichever comes first. It returns whether the process died.
func (e *bankEnv) crashRun(appends, saves int, after bool) bool {
	e.t.Helper()
	b, err := domain.New(&crashStore{Store: e.store, budget: appends, after: after})
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	defer b.Close()
	p, err := domain.NewTransferProcess(b, &crashCheckpoints{Checkpoints: e.cps, budget: saves}, quiet)
	if err != nil {
		e.t.Fatalf("NewTransferProcess: %v", err)
	}
	_, err = p.Drain(context.Background())
	if err != nil && !errors.Is(err, errCrash) {
		e.t.Fatalf("Drain failed with %v, not the simulated crash", err)
	}
	return err != nil
}
