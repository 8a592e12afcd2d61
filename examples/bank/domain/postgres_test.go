package domain_test

import (
	"context"
	"testing"

	"github.com/google/uuid"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/examples/bank/domain"
	"github.com/eskit/eskit/internal/infra/testsvc"
)

// TestPostgresEndToEnd runs the bank on PostgreSQL: transfers that
// complete, are rejected and are refunded, a process that dies midway and
// resumes from its checkpoint in the database, and a live Run.
func TestPostgresEndToEnd(t *testing.T) {
	ctx := context.Background()
	pool := testsvc.Pool(t)
	const schema = "bank"
	if err := pgstore.Migrate(ctx, pool, schema); err != nil {
		t.Fatal(err)
	}
	store, err := pgstore.New(ctx, pool, pgstore.WithSchema(schema))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	sagas, err := pgstore.NewSagaStore(pool, schema)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, store, sagas)
	if n := e.instances(); len(n) != 0 {
		t.Fatalf("instances before any transfer: %v", n)
	}

	a := e.open("EUR", 100, 1000)
	b := e.open("EUR", 0, 0)
	c := e.open("USD", 0, 0)
	completes := e.transfer(a, b, 300, "EUR")
	refunded := e.transfer(a, c, 200, "EUR")
	rejected := e.transfer(b, a, 1, "EUR") // b holds nothing yet

	// The feed's safe point is cluster-wide: another session's open
	// transaction can hold back events that are committed already. Wait until
	// they are visible, so the process sees the three requests.
	testsvc.SettledHead(t, store)

	// Die after the first debit is written, before the process learns it.
	if !e.crashRun(1, 100, true) {
		t.Fatal("the process did not die")
	}
	e.drain()
	cp, err := e.checkpoint()
	if err != nil || cp.IsZero() {
		t.Fatalf("checkpoint in the database: %s, %v", cp, err)
	}

	for id, want := range map[uuid.UUID]domain.TransferStatus{completes: domain.StatusCompleted, refunded: domain.StatusRefunded, rejected: domain.StatusRejected} {
		if tr := e.transferState(id); tr.Status != want {
			t.Fatalf("transfer %s ended %s (%s), want %s\n%s", id, tr.Status, tr.Reason, want, e.dump())
		}
	}
	legs := e.legs()
	for _, id := range []uuid.UUID{completes, refunded, rejected} {
		e.checkOutcome(id, legs[id])
	}
	if got := e.account(a).Balance + e.account(b).Balance; got != 1000 || e.account(b).Balance != 300 || e.account(c).Balance != 0 {
		t.Fatalf("balances a=%d b=%d c=%d", e.account(a).Balance, e.account(b).Balance, e.account(c).Balance)
	}

	// Live: the process follows the feed from its checkpoint.
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.process().Run(runCtx) }()
	live := e.transfer(b, a, 50, "EUR")
	waitFor(t, store, func(r eventstore.Record) bool {
		return r.StreamID == domain.TransferStream(live) && r.Type == domain.EventTransferCompleted
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if e.account(b).Balance != 250 {
		t.Fatalf("target of the live transfer holds %d", e.account(b).Balance)
	}
}
