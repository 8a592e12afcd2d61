package domain_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/memstore"
	"github.com/eskit/eskit/examples/bank/domain"
	"github.com/eskit/eskit/snapshot"
)

func TestBankCommandsAndQueries(t *testing.T) {
	ctx := context.Background()
	e := newMemEnv(t)
	r, err := e.bank.OpenAccount(ctx, domain.OpenAccount{Owner: "ann", Currency: "EUR", OverdraftLimit: 10}, uuid.Nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.ID == uuid.Nil || r.StreamID != domain.AccountStream(r.ID) || r.Version != 1 || r.Position.IsZero() || r.Duplicate {
		t.Fatalf("open result %+v", r)
	}
	id := r.ID
	steps := []func() (domain.Result, error){
		func() (domain.Result, error) {
			return e.bank.Deposit(ctx, id, domain.Deposit{Amount: 500, Currency: "EUR"}, uuid.Nil)
		},
		func() (domain.Result, error) {
			return e.bank.Withdraw(ctx, id, domain.Withdraw{Amount: 510, Currency: "EUR"}, uuid.Nil)
		},
		func() (domain.Result, error) { return e.bank.Freeze(ctx, id, domain.Freeze{Reason: "audit"}, uuid.Nil) },
		func() (domain.Result, error) { return e.bank.Unfreeze(ctx, id, domain.Unfreeze{}, uuid.Nil) },
		func() (domain.Result, error) {
			return e.bank.Deposit(ctx, id, domain.Deposit{Amount: 10, Currency: "EUR"}, uuid.Nil)
		},
		func() (domain.Result, error) { return e.bank.CloseAccount(ctx, id, domain.Close{}, uuid.Nil) },
	}
	prev := r.Position
	for i, step := range steps {
		r, err := step()
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if r.ID != id || r.Version != int64(i+2) || !r.Position.After(prev) {
			t.Fatalf("step %d: result %+v after %s", i, r, prev)
		}
		prev = r.Position
	}
	a, v, err := e.bank.Account(ctx, id)
	if err != nil || v != 7 {
		t.Fatalf("Account: version %d, %v", v, err)
	}
	want := domain.Account{ID: id, Status: domain.StatusClosed, Owner: "ann", Currency: "EUR", OverdraftLimit: 10}
	if a.ID != want.ID || a.Status != want.Status || a.Owner != want.Owner || a.Currency != want.Currency || a.OverdraftLimit != want.OverdraftLimit || a.Balance != 0 || a.Pending != nil {
		t.Fatalf("Account = %+v, want %+v", a, want)
	}

	// Rejections keep the domain error, and say which stream refused.
	_, err = e.bank.Deposit(ctx, id, domain.Deposit{Amount: 1, Currency: "EUR"}, uuid.Nil)
	if !errors.Is(err, domain.ErrAccountClosed) || !errors.Is(err, aggregate.ErrRejected) || domain.ErrorCode(err) != "account_closed" {
		t.Fatalf("deposit on a closed account: %v", err)
	}
	_, err = e.bank.Deposit(ctx, uuid.New(), domain.Deposit{Amount: 1, Currency: "EUR"}, uuid.Nil)
	if !errors.Is(err, domain.ErrAccountNotFound) {
		t.Fatalf("deposit on an unknown account: %v", err)
	}
	var ve *domain.ValidationError
	if _, err = e.bank.Deposit(ctx, uuid.Nil, domain.Deposit{Amount: 1, Currency: "EUR"}, uuid.Nil); !errors.As(err, &ve) || ve.Field != "account_id" {
		t.Fatalf("deposit without an account ID: %v", err)
	}
	if _, _, err := e.bank.Account(ctx, uuid.New()); !errors.Is(err, domain.ErrAccountNotFound) {
		t.Fatalf("Account of an unknown ID: %v", err)
	}
	if _, _, err := e.bank.Transfer(ctx, uuid.New()); !errors.Is(err, domain.ErrTransferNotFound) {
		t.Fatalf("Transfer of an unknown ID: %v", err)
	}
}

// TestBankIdempotency: a command retried with its command ID is answered
// with the first result and changes nothing more, and a new account or
// transfer retried with its command ID gets the same ID.
func TestBankIdempotency(t *testing.T) {
	ctx := context.Background()
	e := newMemEnv(t)
	openCmd := uuid.New()
	first, err := e.bank.OpenAccount(ctx, domain.OpenAccount{Owner: "ann", Currency: "EUR"}, openCmd)
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.bank.OpenAccount(ctx, domain.OpenAccount{Owner: "ann", Currency: "EUR"}, openCmd)
	if err != nil || again.ID != first.ID || !again.Duplicate || again.Position != first.Position {
		t.Fatalf("retried open: %+v, %v; first %+v", again, err, first)
	}
	id := first.ID
	depCmd := uuid.New()
	for i := range 3 {
		r, err := e.bank.Deposit(ctx, id, domain.Deposit{Amount: 100, Currency: "EUR"}, depCmd)
		if err != nil || r.Version != 2 || r.Duplicate != (i > 0) {
			t.Fatalf("deposit attempt %d: %+v, %v", i, r, err)
		}
	}
	// A retried withdrawal answers with its first outcome even though
	// deciding it again now would fail.
	wdCmd := uuid.New()
	if _, err := e.bank.Withdraw(ctx, id, domain.Withdraw{Amount: 100, Currency: "EUR"}, wdCmd); err != nil {
		t.Fatal(err)
	}
	if r, err := e.bank.Withdraw(ctx, id, domain.Withdraw{Amount: 100, Currency: "EUR"}, wdCmd); err != nil || !r.Duplicate {
		t.Fatalf("retried withdrawal: %+v, %v", r, err)
	}
	if a := e.account(id); a.Balance != 0 {
		t.Fatalf("balance %d after one deposit and one withdrawal of 100", a.Balance)
	}

	b := e.open("EUR", 0, 0)
	trCmd := uuid.New()
	t1, err := e.bank.RequestTransfer(ctx, domain.RequestTransfer{From: id, To: b, Amount: 1, Currency: "EUR"}, trCmd)
	if err != nil {
		t.Fatal(err)
	}
	t2, err := e.bank.RequestTransfer(ctx, domain.RequestTransfer{From: id, To: b, Amount: 1, Currency: "EUR"}, trCmd)
	if err != nil || t2.ID != t1.ID || !t2.Duplicate {
		t.Fatalf("retried transfer request: %+v, %v", t2, err)
	}
	// The same transfer ID without the command ID is a second request.
	if _, err := e.bank.RequestTransfer(ctx, domain.RequestTransfer{ID: t1.ID, From: id, To: b, Amount: 1, Currency: "EUR"}, uuid.Nil); !errors.Is(err, domain.ErrTransferState) {
		t.Fatalf("second request of one transfer ID: %v", err)
	}
}

// TestBankWithSnapshots: accounts loaded from snapshots plus the tail
// equal accounts replayed from their events.
func TestBankWithSnapshots(t *testing.T) {
	ctx := context.Background()
	store := memstore.New()
	snaps := snapshot.NewMemory()
	withSnaps, err := domain.New(store, domain.WithSnapshots(snaps, snapshot.EveryN(3)))
	if err != nil {
		t.Fatal(err)
	}
	defer withSnaps.Close()
	plain, err := domain.New(store)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()

	r, err := withSnaps.OpenAccount(ctx, domain.OpenAccount{Owner: "ann", Currency: "JPY", OverdraftLimit: 1000}, uuid.Nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if i%3 == 0 {
			_, err = withSnaps.Withdraw(ctx, r.ID, domain.Withdraw{Amount: int64(50 + i), Currency: "JPY"}, uuid.Nil)
		} else {
			_, err = withSnaps.Deposit(ctx, r.ID, domain.Deposit{Amount: int64(10 * i), Currency: "JPY"}, uuid.Nil)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := withSnaps.Accounts().Flush(ctx); err != nil {
		t.Fatal(err)
	}
	snap, err := snaps.Load(ctx, domain.AccountStream(r.ID))
	if err != nil || snap.Version < 3 {
		t.Fatalf("no snapshot taken: %+v, %v", snap, err)
	}
	a1, v1, err1 := withSnaps.Account(ctx, r.ID)
	a2, v2, err2 := plain.Account(ctx, r.ID)
	if err1 != nil || err2 != nil || v1 != v2 || a1.Balance != a2.Balance || a1.Status != a2.Status || a1.Owner != a2.Owner {
		t.Fatalf("from snapshot %+v@%d (%v), replayed %+v@%d (%v)", a1, v1, err1, a2, v2, err2)
	}
}

func TestRegister(t *testing.T) {
	reg := eventstore.NewRegistry()
	if err := domain.Register(reg); err != nil {
		t.Fatal(err)
	}
	if got := len(reg.Types()); got != 13 {
		t.Fatalf("%d event types registered", got)
	}
	if err := domain.Register(reg); err == nil {
		t.Fatal("registering twice did not fail")
	}
	// Stored payloads round-trip through the registry.
	tid := uuid.New()
	for _, v := range []any{
		domain.Deposited{Amount: 5, Balance: 7, TransferID: tid, Refund: true},
		domain.Withdrawn{Amount: 5, Balance: -3},
		domain.TransferRequested{TransferID: tid, From: uuid.New(), To: uuid.New(), Amount: 9, Currency: "CHF"},
		domain.CreditFailed{Reason: "account_frozen"},
	} {
		ev, err := reg.Encode(v, nil)
		if err != nil {
			t.Fatal(err)
		}
		back, err := reg.Decode(eventstore.Record{Event: ev, StreamID: "s", Version: 1})
		if err != nil || back != v {
			t.Fatalf("round trip of %#v gave %#v, %v", v, back, err)
		}
	}
}

func TestStreamNames(t *testing.T) {
	id := uuid.New()
	if got, ok := domain.ParseAccountStream(domain.AccountStream(id)); !ok || got != id {
		t.Fatal("account stream does not parse back")
	}
	if got, ok := domain.ParseTransferStream(domain.TransferStream(id)); !ok || got != id {
		t.Fatal("transfer stream does not parse back")
	}
	for _, s := range []string{domain.TransferStream(id), "account-", "account-nope", "account-" + id.String() + "x", "ACCOUNT-" + id.String()} {
		if _, ok := domain.ParseAccountStream(s); ok {
			t.Errorf("%q parsed as an account stream", s)
		}
	}
}
