package domain_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/memstore"
	"github.com/eskit/eskit/examples/bank/domain"
	"github.com/eskit/eskit/saga"
)

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// tb is what the helpers need of *testing.T and *rapid.T.
type tb interface {
	Helper()
	Fatalf(format string, args ...any)
}

// bankEnv is a bank on an in-memory store, with its transfer process's
// saga store (instances, outboxes and checkpoints).
type bankEnv struct {
	t     tb
	store eventstore.Store
	bank  *domain.Bank
	sagas saga.Store
}

func newMemEnv(t tb) *bankEnv {
	t.Helper()
	return newEnv(t, memstore.New(), saga.NewMemoryStore())
}

func newEnv(t tb, store eventstore.Store, sagas saga.Store) *bankEnv {
	t.Helper()
	b, err := domain.New(store)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if c, ok := t.(interface{ Cleanup(func()) }); ok {
		c.Cleanup(func() { _ = b.Close() })
	}
	return &bankEnv{t: t, store: store, bank: b, sagas: sagas}
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

func (e *bankEnv) process(opts ...saga.RunnerOption) *domain.TransferProcess {
	e.t.Helper()
	p, err := domain.NewTransferProcess(e.bank, e.sagas, append([]saga.RunnerOption{quiet}, opts...)...)
	if err != nil {
		e.t.Fatalf("NewTransferProcess: %v", err)
	}
	return p
}

// drain runs the process until it has read the feed up to the store's
// head and every transfer's instance is done (or parked). On PostgreSQL
// the events of the process's last commands may reach the gap-safe feed
// after Drain returned, and a command that failed for a while waits for
// its retry: drain then runs it again.
func (e *bankEnv) drain() {
	e.t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := e.process().Drain(ctx); err != nil {
			e.t.Fatalf("Drain: %v", err)
		}
		head, err := e.store.Head(ctx)
		if err != nil {
			e.t.Fatalf("Head: %v", err)
		}
		cp, err := e.checkpoint()
		if err != nil {
			e.t.Fatalf("checkpoint: %v", err)
		}
		live := e.instances()
		if !head.After(cp) && live[saga.StatusRunning]+live[saga.StatusWaiting] == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("the process does not finish: checkpoint %s, head %s, instances %v\n%s", cp, head, live, e.dump())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// instances counts the process's instances by status.
func (e *bankEnv) instances() map[saga.Status]int {
	e.t.Helper()
	n, err := e.sagas.Count(context.Background(), domain.TransferSagaName)
	if err != nil {
		e.t.Fatalf("Count: %v", err)
	}
	for s, c := range n {
		if c == 0 {
			delete(n, s)
		}
	}
	return n
}

// checkpoint returns the process's checkpoint (claiming the partition: the
// process must not run).
func (e *bankEnv) checkpoint() (eventstore.Position, error) {
	c, err := e.sagas.Claim(context.Background(), saga.Fence{Saga: domain.TransferSagaName})
	return c.Checkpoint, err
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
var quiet = saga.WithLogger(slog.New(slog.DiscardHandler))

var errCrash = errors.New("simulated crash")

// crash is the death of a transfer process: after a number of appends
// (the last one written but reported as failed when after is set) or of
// writes to the saga store (step commits and sent commands), whichever
// comes first, the process is dead and writes nothing more anywhere.
type crash struct {
	mu      sync.Mutex
	appends int
	saves   int
	after   bool
	dead    bool
}

// append reports whether an append may go ahead, and whether it is the
// last one (written, then reported as failed).
func (c *crash) append() (ok, last bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead || c.appends == 0 {
		c.dead = true
		return false, false
	}
	c.appends--
	if c.appends == 0 && c.after {
		c.dead = true
		return true, true
	}
	return true, false
}

// save reports whether a write of the saga store may go ahead; counted
// ones use up the budget.
func (c *crash) save(counted bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return false
	}
	if !counted {
		return true
	}
	if c.saves == 0 {
		c.dead = true
		return false
	}
	c.saves--
	return true
}

// crashStore is the event store as the dying process sees it.
type crashStore struct {
	eventstore.Store
	c *crash
}

func (s *crashStore) Append(ctx context.Context, streamID string, expected eventstore.ExpectedVersion, events ...eventstore.Event) (eventstore.AppendResult, error) {
	ok, last := s.c.append()
	if !ok {
		return eventstore.AppendResult{}, errCrash
	}
	r, err := s.Store.Append(ctx, streamID, expected, events...)
	if err == nil && last {
		return eventstore.AppendResult{}, errCrash
	}
	return r, err
}

// crashSagas is the saga store as the dying process sees it.
type crashSagas struct {
	saga.Store
	c *crash
}

func (s *crashSagas) Claim(ctx context.Context, f saga.Fence) (saga.Claimed, error) {
	if !s.c.save(false) {
		return saga.Claimed{}, errCrash
	}
	return s.Store.Claim(ctx, f)
}

func (s *crashSagas) Commit(ctx context.Context, c saga.Commit) error {
	if !s.c.save(true) {
		return errCrash
	}
	return s.Store.Commit(ctx, c)
}

func (s *crashSagas) Sent(ctx context.Context, f saga.Fence, id string, seq int64) error {
	if !s.c.save(true) {
		return errCrash
	}
	return s.Store.Sent(ctx, f, id, seq)
}

func (s *crashSagas) Failed(ctx context.Context, f saga.Fence, id string, cmd saga.Command, park bool) error {
	if !s.c.save(false) {
		return errCrash
	}
	return s.Store.Failed(ctx, f, id, cmd, park)
}

// forgetful is a saga store that lost its checkpoint: the process reads
// the feed again from the start (its instances are kept).
type forgetful struct{ saga.Store }

func (s forgetful) Claim(ctx context.Context, f saga.Fence) (saga.Claimed, error) {
	c, err := s.Store.Claim(ctx, f)
	c.Checkpoint = eventstore.Position{}
	return c, err
}

// crashRun runs a transfer process that dies after appends appends (after
// the last one is written when after is set) or saves writes to its saga
// store, whichever comes first. It returns whether the process died.
func (e *bankEnv) crashRun(appends, saves int, after bool) bool {
	e.t.Helper()
	return e.crashRunOn(e.sagas, appends, saves, after)
}

// crashRunOn is crashRun on another view of the saga store.
func (e *bankEnv) crashRunOn(sagas saga.Store, appends, saves int, after bool) bool {
	e.t.Helper()
	c := &crash{appends: appends, saves: saves, after: after}
	b, err := domain.New(&crashStore{Store: e.store, c: c})
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	defer b.Close()
	p, err := domain.NewTransferProcess(b, &crashSagas{Store: sagas, c: c}, quiet)
	if err != nil {
		e.t.Fatalf("NewTransferProcess: %v", err)
	}
	err = p.Drain(context.Background())
	if err != nil && !errors.Is(err, errCrash) {
		e.t.Fatalf("Drain failed with %v, not the simulated crash", err)
	}
	return err != nil
}

// dump describes the process's instances, for failure messages.
func (e *bankEnv) dump() string {
	ctx := context.Background()
	list, err := e.sagas.List(ctx, domain.TransferSagaName, saga.Filter{Limit: 1000})
	if err != nil {
		return fmt.Sprintf("list the instances: %v", err)
	}
	var b strings.Builder
	for _, in := range list {
		g, err := e.sagas.Get(ctx, domain.TransferSagaName, in.ID)
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", in.ID, err)
			continue
		}
		fmt.Fprintf(&b, "%s %s park=%+v state=%s commands=%+v held=%d\n", g.ID, g.Status, g.Park, g.State, g.Commands, g.Held)
	}
	return b.String()
}
