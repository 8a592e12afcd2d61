package domain_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"pgregory.net/rapid"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/examples/bank/domain"
	"github.com/eskit/eskit/saga"
)

func TestTransferCompletes(t *testing.T) {
	e := newMemEnv(t)
	a := e.open("EUR", 0, 100)
	b := e.open("EUR", 0, 0)
	id := e.transfer(a, b, 30, "EUR")
	if tr := e.transferState(id); tr.Status != domain.StatusRequested {
		t.Fatalf("before the process runs the transfer is %s", tr.Status)
	}
	e.drain()

	tr := e.transferState(id)
	if tr.Status != domain.StatusCompleted || tr.From != a || tr.To != b || tr.Amount != 30 {
		t.Fatalf("transfer %+v", tr)
	}
	if got := e.account(a); got.Balance != 70 || got.Pending != nil {
		t.Fatalf("source %+v", got)
	}
	if got := e.account(b); got.Balance != 30 {
		t.Fatalf("target %+v", got)
	}
	e.checkOutcome(id, e.legs()[id])

	// The credit carries the transfer ID for read models, and the
	// correlation ID ties every step to the transfer.
	credit := waitFor(t, e.store, func(r eventstore.Record) bool {
		return r.StreamID == domain.AccountStream(b) && r.Type == domain.EventDeposited
	})
	v, err := e.bank.Registry().Decode(credit)
	if err != nil || v != (domain.Deposited{Amount: 30, Balance: 30, TransferID: id}) {
		t.Fatalf("credit event %#v, %v", v, err)
	}
	if got := credit.Metadata.Get(eventstore.MetaCorrelationID); got != id.String() {
		t.Fatalf("correlation ID %q, want the transfer's", got)
	}

	// The transfer's instance is done, and draining again finds nothing
	// to do.
	if got := e.instances(); got[saga.StatusDone] != 1 || len(got) != 1 {
		t.Fatalf("instances %v, want one done", got)
	}
	head, err := e.store.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	e.drain()
	if again, err := e.store.Head(context.Background()); err != nil || again != head {
		t.Fatalf("second Drain wrote: head %s, was %s (%v)", again, head, err)
	}
}

func TestTransferRejected(t *testing.T) {
	for _, tc := range []struct {
		name   string
		setup  func(e *bankEnv, src uuid.UUID)
		amount int64
		cur    string
		reason string
	}{
		{"insufficient funds", nil, 101, "EUR", "insufficient_funds"},
		{"frozen source", func(e *bankEnv, src uuid.UUID) {
			if _, err := e.bank.Freeze(context.Background(), src, domain.Freeze{}, uuid.Nil); err != nil {
				t.Fatal(err)
			}
		}, 10, "EUR", "account_frozen"},
		{"closed source", func(e *bankEnv, src uuid.UUID) {
			ctx := context.Background()
			if _, err := e.bank.Withdraw(ctx, src, domain.Withdraw{Amount: 100, Currency: "EUR"}, uuid.Nil); err != nil {
				t.Fatal(err)
			}
			if _, err := e.bank.CloseAccount(ctx, src, domain.Close{}, uuid.Nil); err != nil {
				t.Fatal(err)
			}
		}, 10, "EUR", "account_closed"},
		{"currency mismatch", nil, 10, "USD", "currency_mismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newMemEnv(t)
			a := e.open("EUR", 0, 100)
			b := e.open("USD", 0, 0)
			if tc.setup != nil {
				tc.setup(e, a)
			}
			before := e.account(a).Balance
			id := e.transfer(a, b, tc.amount, tc.cur)
			e.drain()
			tr := e.transferState(id)
			if tr.Status != domain.StatusRejected || tr.Reason != tc.reason {
				t.Fatalf("transfer ended %s (%q), want rejected (%q)", tr.Status, tr.Reason, tc.reason)
			}
			if got := e.account(a).Balance; got != before {
				t.Fatalf("source balance %d, want %d", got, before)
			}
			if got := e.account(b).Balance; got != 0 {
				t.Fatalf("target balance %d", got)
			}
			e.checkOutcome(id, e.legs()[id])
		})
	}
	t.Run("unknown source", func(t *testing.T) {
		e := newMemEnv(t)
		b := e.open("EUR", 0, 0)
		id := e.transfer(uuid.New(), b, 10, "EUR")
		e.drain()
		if tr := e.transferState(id); tr.Status != domain.StatusRejected || tr.Reason != "account_not_found" {
			t.Fatalf("transfer %+v", tr)
		}
	})
}

func TestTransferRefunded(t *testing.T) {
	for _, tc := range []struct {
		name   string
		target func(e *bankEnv) uuid.UUID
		reason string
	}{
		{"closed target", func(e *bankEnv) uuid.UUID {
			id := e.open("EUR", 0, 0)
			if _, err := e.bank.CloseAccount(context.Background(), id, domain.Close{}, uuid.Nil); err != nil {
				t.Fatal(err)
			}
			return id
		}, "account_closed"},
		{"frozen target", func(e *bankEnv) uuid.UUID {
			id := e.open("EUR", 0, 0)
			if _, err := e.bank.Freeze(context.Background(), id, domain.Freeze{}, uuid.Nil); err != nil {
				t.Fatal(err)
			}
			return id
		}, "account_frozen"},
		{"target in another currency", func(e *bankEnv) uuid.UUID { return e.open("USD", 0, 0) }, "currency_mismatch"},
		{"unknown target", func(*bankEnv) uuid.UUID { return uuid.New() }, "account_not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newMemEnv(t)
			a := e.open("EUR", 50, 100)
			b := tc.target(e)
			id := e.transfer(a, b, 120, "EUR")
			e.drain()
			tr := e.transferState(id)
			if tr.Status != domain.StatusRefunded || tr.Reason != tc.reason {
				t.Fatalf("transfer ended %s (%q), want refunded (%q)", tr.Status, tr.Reason, tc.reason)
			}
			if got := e.account(a); got.Balance != 100 || got.Pending != nil {
				t.Fatalf("source after the refund %+v", got)
			}
			e.checkOutcome(id, e.legs()[id])
		})
	}
}

// TestProcessStopsAfterDebit: the process dies after debiting the source;
// meanwhile the source is frozen and the target closed. Restarted, it
// refunds the frozen source.
func TestProcessStopsAfterDebit(t *testing.T) {
	ctx := context.Background()
	e := newMemEnv(t)
	a := e.open("EUR", 0, 100)
	b := e.open("EUR", 0, 0)
	id := e.transfer(a, b, 40, "EUR")

	// Exactly two appends: the debit and its record, then death.
	if !e.crashRun(2, 100, false) {
		t.Fatal("the process did not die")
	}
	if tr := e.transferState(id); tr.Status != domain.StatusDebited {
		t.Fatalf("after the crash the transfer is %s", tr.Status)
	}
	if got := e.account(a); got.Balance != 60 || got.PendingTotal() != 40 {
		t.Fatalf("source while in flight %+v", got)
	}
	// The source cannot be closed with money in flight.
	if _, err := e.bank.Withdraw(ctx, a, domain.Withdraw{Amount: 60, Currency: "EUR"}, uuid.Nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.bank.CloseAccount(ctx, a, domain.Close{}, uuid.Nil); !errors.Is(err, domain.ErrTransferPending) {
		t.Fatalf("closing the source with a transfer in flight: %v", err)
	}
	if _, err := e.bank.Freeze(ctx, a, domain.Freeze{}, uuid.Nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.bank.CloseAccount(ctx, b, domain.Close{}, uuid.Nil); err != nil {
		t.Fatal(err)
	}

	e.drain()
	if tr := e.transferState(id); tr.Status != domain.StatusRefunded || tr.Reason != "account_closed" {
		t.Fatalf("transfer %+v", tr)
	}
	if got := e.account(a); got.Balance != 40 || got.Pending != nil || got.Status != domain.StatusFrozen {
		t.Fatalf("source after the refund %+v", got)
	}
	e.checkOutcome(id, e.legs()[id])
}

// TestProcessCrashesAtEveryStep kills the process at every possible append
// (before and after it is written) and every write of its saga store (a
// step with its checkpoint, a command marked sent), restarts it,
// and checks that the transfer ends as it would have without the crash.
func TestProcessCrashesAtEveryStep(t *testing.T) {
	for _, path := range []struct {
		name   string
		status domain.TransferStatus
		target func(e *bankEnv) uuid.UUID
	}{
		{"completed", domain.StatusCompleted, func(e *bankEnv) uuid.UUID { return e.open("EUR", 0, 0) }},
		{"refunded", domain.StatusRefunded, func(e *bankEnv) uuid.UUID { return e.open("USD", 0, 0) }},
	} {
		for appends := range 5 {
			for _, after := range []bool{false, true} {
				for saves := range 4 {
					e := newMemEnv(t)
					a := e.open("EUR", 0, 100)
					b := path.target(e)
					id := e.transfer(a, b, 25, "EUR")
					// Die, restart and die again one step further,
					// until the process gets through.
					for na, ns := appends, saves; e.crashRun(na, ns, after); na, ns = na+1, ns+1 {
					}
					e.drain()
					tr := e.transferState(id)
					if tr.Status != path.status {
						t.Fatalf("%s: crash at append %d (after %v), save %d: transfer ended %s", path.name, appends, after, saves, tr.Status)
					}
					e.checkOutcome(id, e.legs()[id])
					if got := e.account(a).Balance + e.account(b).Balance; got != 100 {
						t.Fatalf("%s: money not conserved: %d", path.name, got)
					}
				}
			}
		}
	}
}

// TestTransfersConserveMoney: random accounts, deposits, withdrawals,
// freezes, closings and transfers (many of which fail and are refunded or
// rejected), with the transfer process dying at random points and
// restarting. Once it has drained, every transfer is over and moved money
// exactly as its outcome says, no account has money in flight, and in each
// currency the balances add up to the deposits minus the withdrawals.
func TestTransfersConserveMoney(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		ctx := context.Background()
		e := newMemEnv(rt)
		currencies := []string{"EUR", "USD"}
		var accounts []uuid.UUID
		currencyOf := map[uuid.UUID]string{}
		for i := range rapid.IntRange(2, 4).Draw(rt, "accounts") {
			cur := rapid.SampledFrom(currencies).Draw(rt, "currency")
			id := e.open(cur, rapid.Int64Range(0, 50).Draw(rt, "overdraft"), 0)
			accounts = append(accounts, id)
			currencyOf[id] = cur
			_ = i
		}
		unknown := uuid.New()
		net := map[string]int64{}
		var transfers []uuid.UUID
		pick := func(label string) uuid.UUID { return rapid.SampledFrom(accounts).Draw(rt, label) }

		for range rapid.IntRange(1, 25).Draw(rt, "ops") {
			switch rapid.IntRange(0, 7).Draw(rt, "op") {
			case 0, 1:
				acc := pick("account")
				amount := rapid.Int64Range(1, 500).Draw(rt, "amount")
				if _, err := e.bank.Deposit(ctx, acc, domain.Deposit{Amount: amount, Currency: currencyOf[acc]}, uuid.Nil); err == nil {
					net[currencyOf[acc]] += amount
				}
			case 2:
				acc := pick("account")
				amount := rapid.Int64Range(1, 300).Draw(rt, "amount")
				if _, err := e.bank.Withdraw(ctx, acc, domain.Withdraw{Amount: amount, Currency: currencyOf[acc]}, uuid.Nil); err == nil {
					net[currencyOf[acc]] -= amount
				}
			case 3:
				_, _ = e.bank.Freeze(ctx, pick("account"), domain.Freeze{}, uuid.Nil)
			case 4:
				_, _ = e.bank.Unfreeze(ctx, pick("account"), domain.Unfreeze{}, uuid.Nil)
			case 5:
				_, _ = e.bank.CloseAccount(ctx, pick("account"), domain.Close{}, uuid.Nil)
			case 6:
				from := pick("from")
				to := rapid.SampledFrom(append([]uuid.UUID{unknown}, accounts...)).Filter(func(id uuid.UUID) bool { return id != from }).Draw(rt, "to")
				cur := currencyOf[from]
				if rapid.IntRange(0, 4).Draw(rt, "other currency") == 0 {
					cur = rapid.SampledFrom(currencies).Draw(rt, "currency")
				}
				r, err := e.bank.RequestTransfer(ctx, domain.RequestTransfer{From: from, To: to, Amount: rapid.Int64Range(1, 300).Draw(rt, "amount"), Currency: cur}, uuid.Nil)
				if err != nil {
					rt.Fatalf("RequestTransfer: %v", err)
				}
				transfers = append(transfers, r.ID)
			case 7:
				e.crashRun(rapid.IntRange(0, 8).Draw(rt, "appends"), rapid.IntRange(0, 4).Draw(rt, "saves"), rapid.Bool().Draw(rt, "after"))
			}
		}
		e.drain()

		legs := e.legs()
		for _, id := range transfers {
			e.checkOutcome(id, legs[id])
		}
		sum := map[string]int64{}
		for _, id := range accounts {
			a := e.account(id)
			if a.Pending != nil {
				rt.Fatalf("account %s still has transfers in flight: %+v", id, a.Pending)
			}
			if err := domain.AccountInvariant(a); err != nil {
				rt.Fatalf("account %s: %v", id, err)
			}
			sum[a.Currency] += a.Balance
		}
		for _, cur := range currencies {
			if sum[cur] != net[cur] {
				rt.Fatalf("%s: balances add up to %d, deposits minus withdrawals to %d", cur, sum[cur], net[cur])
			}
		}
		if _, _, err := e.bank.Account(ctx, unknown); !errors.Is(err, domain.ErrAccountNotFound) {
			rt.Fatalf("a transfer to an unknown account created it: %v", err)
		}
	})
}

// TestRunFollowsTheFeed runs the process live: transfers requested while it
// runs are carried out, and it stops cleanly, with its checkpoint saved,
// when its context ends.
func TestRunFollowsTheFeed(t *testing.T) {
	e := newMemEnv(t)
	p := e.process()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()

	a := e.open("EUR", 0, 100)
	b := e.open("EUR", 0, 0)
	ok := e.transfer(a, b, 60, "EUR")
	refused := e.transfer(a, b, 60, "EUR") // only 40 left after the first
	completed := waitFor(t, e.store, func(r eventstore.Record) bool {
		return r.StreamID == domain.TransferStream(ok) && r.Type == domain.EventTransferCompleted
	})
	waitFor(t, e.store, func(r eventstore.Record) bool {
		return r.StreamID == domain.AccountStream(a) && r.Type == domain.EventTransferSettled
	})
	rejected := waitFor(t, e.store, func(r eventstore.Record) bool {
		return r.StreamID == domain.TransferStream(refused) && r.Type == domain.EventTransferRejected
	})
	// The process acts on both final events (its own commands wrote
	// them), so its checkpoint passes them while it runs.
	last := completed.Position
	if rejected.Position.After(last) {
		last = rejected.Position
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		cp, err := e.checkpoint()
		if err == nil && !cp.Before(last) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("checkpoint %s (%v), want at least %s", cp, err, last)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run returned %v after its context ended", err)
	}
	if tr := e.transferState(ok); tr.Status != domain.StatusCompleted {
		t.Fatalf("first transfer %s", tr.Status)
	}
	if tr := e.transferState(refused); tr.Status != domain.StatusRejected || tr.Reason != "insufficient_funds" {
		t.Fatalf("second transfer %+v", tr)
	}
	if cp, err := e.checkpoint(); err != nil || cp.Before(last) {
		t.Fatalf("checkpoint %s (%v) after Run returned, want at least %s", cp, err, last)
	}
}

func TestNewTransferProcessRejectsBadArguments(t *testing.T) {
	e := newMemEnv(t)
	if _, err := domain.NewTransferProcess(nil, e.sagas); err == nil {
		t.Error("no error without a bank")
	}
	if _, err := domain.NewTransferProcess(e.bank, nil); err == nil {
		t.Error("no error without a saga store")
	}
	if _, err := domain.NewTransferProcess(e.bank, e.sagas, saga.WithPartitions(0)); !errors.Is(err, saga.ErrInvalidArgument) {
		t.Errorf("no partitions: %v", err)
	}
}

// TestHandleIsIdempotent: reading the feed again from the start (a lost
// checkpoint), records handled already or superseded by later ones, takes
// no step twice.
func TestHandleIsIdempotent(t *testing.T) {
	e := newMemEnv(t)
	a := e.open("EUR", 0, 100)
	b := e.open("EUR", 0, 0)
	id := e.transfer(a, b, 10, "EUR")
	// The debit and its record, then death before the credit.
	if !e.crashRun(2, 100, false) {
		t.Fatal("the process did not die")
	}
	for range 3 {
		// The whole feed again, and death at the credit.
		if !e.crashRunOn(forgetful{e.sagas}, 0, 100, false) {
			t.Fatal("the process did not die")
		}
		if tr := e.transferState(id); tr.Status != domain.StatusDebited {
			t.Fatalf("transfer %s", tr.Status)
		}
		if got := e.account(a).Balance; got != 90 {
			t.Fatalf("source balance %d after handling the request again", got)
		}
	}
	e.drain()
	p, err := domain.NewTransferProcess(e.bank, forgetful{e.sagas}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.checkOutcome(id, e.legs()[id])
	if got := e.account(b).Balance; got != 10 {
		t.Fatalf("target balance %d", got)
	}
}
