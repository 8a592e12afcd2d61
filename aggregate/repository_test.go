package aggregate_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/aggregate/internal/account"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/snapshot"
)

func TestLoadMissingStreamIsInitialState(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		r := newRepo(t, e.store, aggregate.WithSnapshots(e.snaps, snapshot.EveryN(2)))
		st, v, err := r.Load(t.Context(), "acc-none")
		if err != nil || v != 0 || st != (account.State{}) {
			t.Fatalf("Load of a missing stream = %+v, %d, %v; want the initial state at version 0", st, v, err)
		}
	})
}

func TestHandleAppendsAndLoads(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		r := newRepo(t, e.store)
		res := must(t, r, "acc-1", account.Open{Owner: "ann"})
		if res.Version != 1 || res.Duplicate || res.Position.IsZero() || !reflect.DeepEqual(res.Events, []account.Event{account.Opened{Owner: "ann"}}) {
			t.Fatalf("open: %+v", res)
		}
		res = must(t, r, "acc-1", account.Deposit{Amount: 1200})
		want := account.State{Open: true, Owner: "ann", Balance: 1200, VIP: true}
		if res.Version != 3 || res.State != want || len(res.Events) != 2 {
			t.Fatalf("deposit: %+v, want version 3, two events, state %+v", res, want)
		}
		recs := streamRecords(t, e.store, "acc-1")
		if len(recs) != 3 || recs[2].Position != res.Position {
			t.Fatalf("stored %d records, last at %v; want 3, last at the result's position %v", len(recs), recs[len(recs)-1].Position, res.Position)
		}
		st, v, err := r.Load(t.Context(), "acc-1")
		if err != nil || v != 3 || st != want {
			t.Fatalf("Load = %+v, %d, %v; want %+v at 3", st, v, err, want)
		}
	})
}

func TestRejectedCommand(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		r := newRepo(t, e.store)
		must(t, r, "acc-1", account.Open{Owner: "ann"})
		must(t, r, "acc-1", account.Deposit{Amount: 50})

		_, err := r.Handle(t.Context(), "acc-1", account.Withdraw{Amount: 80}, aggregate.WithCommandID(uuid.New()))
		var insufficient *account.InsufficientFundsError
		if !errors.As(err, &insufficient) || insufficient.Balance != 50 || insufficient.Amount != 80 {
			t.Fatalf("overdraft: got %v, want the decider's *InsufficientFundsError", err)
		}
		if !errors.Is(err, aggregate.ErrRejected) {
			t.Fatalf("overdraft: %v does not match ErrRejected", err)
		}
		var rej *aggregate.RejectedError
		if !errors.As(err, &rej) || rej.StreamID != "acc-1" || rej.Version != 2 {
			t.Fatalf("overdraft: got %#v, want a *RejectedError at acc-1 version 2", err)
		}
		if _, err := r.Handle(t.Context(), "acc-2", account.Deposit{Amount: 1}); !errors.Is(err, account.ErrNotOpen) {
			t.Fatalf("deposit to a missing account: got %v, want ErrNotOpen", err)
		}
		if n := len(streamRecords(t, e.store, "acc-1")); n != 2 {
			t.Fatalf("rejected command appended: %d records", n)
		}
	})
}

func TestCommandWithoutEventsAppendsNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		r := newRepo(t, e.store)
		first := must(t, r, "acc-1", account.Open{Owner: "ann"})
		res := must(t, r, "acc-1", account.Open{Owner: "ann"}, aggregate.WithCommandID(uuid.New()))
		if res.Version != 1 || len(res.Events) != 0 || res.Duplicate || res.State != first.State {
			t.Fatalf("no-op command: %+v", res)
		}
		if n := len(streamRecords(t, e.store, "acc-1")); n != 1 {
			t.Fatalf("no-op command appended: %d records", n)
		}
	})
}

func TestConflictIsRetried(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		other := newRepo(t, e.store)
		must(t, other, "acc-1", account.Open{Owner: "ann"})
		must(t, other, "acc-1", account.Deposit{Amount: 100})

		// The first append of r is preceded by another handler's command
		// on the same stream, after r decided on version 2.
		hs := &hookStore{Store: e.store}
		hs.beforeAppend = func(ctx context.Context, n int64) {
			if n == 1 {
				must(t, other, "acc-1", account.Withdraw{Amount: 70})
			}
		}
		r := newRepo(t, hs)
		res := must(t, r, "acc-1", account.Withdraw{Amount: 20})
		if hs.appends.Load() != 2 {
			t.Fatalf("%d appends, want 2 (one conflict, one retry)", hs.appends.Load())
		}
		want := account.State{Open: true, Owner: "ann", Balance: 10}
		if res.Version != 4 || res.State != want {
			t.Fatalf("retried command: %+v, want version 4 and %+v", res, want)
		}
		st, _, err := r.Load(t.Context(), "acc-1")
		if err != nil || st != want {
			t.Fatalf("Load = %+v, %v; want %+v (both withdrawals applied)", st, err, want)
		}

		// A retry decides on the new state: now the withdrawal no longer fits.
		hs.appends.Store(0)
		hs.beforeAppend = func(ctx context.Context, n int64) {
			if n == 1 {
				must(t, other, "acc-1", account.Withdraw{Amount: 5})
			}
		}
		_, err = r.Handle(t.Context(), "acc-1", account.Withdraw{Amount: 10})
		if !errors.As(err, new(*account.InsufficientFundsError)) {
			t.Fatalf("withdrawal retried on a smaller balance: got %v, want InsufficientFundsError", err)
		}
	})
}

func TestConcurrentHandlersLoseNoUpdate(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		r := newRepo(t, e.store, aggregate.WithMaxRetries(100))
		must(t, r, "acc-1", account.Open{Owner: "ann"})
		const workers, each = 6, 5
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := range each {
					if _, err := r.Handle(context.Background(), "acc-1", account.Deposit{Amount: 1}); err != nil {
						t.Errorf("worker %d deposit %d: %v", w, i, err)
					}
				}
			})
		}
		wg.Wait()
		st, v, err := r.Load(t.Context(), "acc-1")
		if err != nil || st.Balance != workers*each || v != 1+workers*each {
			t.Fatalf("after %d concurrent deposits: %+v at version %d, %v", workers*each, st, v, err)
		}
	})
}

func TestRetriesExhausted(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		other := newRepo(t, e.store)
		must(t, other, "acc-1", account.Open{Owner: "ann"})
		hs := &hookStore{Store: e.store}
		hs.beforeAppend = func(ctx context.Context, n int64) {
			must(t, other, "acc-1", account.Deposit{Amount: 1})
		}
		r := newRepo(t, hs, aggregate.WithMaxRetries(2))
		_, err := r.Handle(t.Context(), "acc-1", account.Deposit{Amount: 10})
		if !errors.Is(err, eventstore.ErrConcurrency) {
			t.Fatalf("got %v, want a concurrency conflict", err)
		}
		var ce *eventstore.ConcurrencyError
		if !errors.As(err, &ce) || ce.Stream != "acc-1" {
			t.Fatalf("got %#v, want a *eventstore.ConcurrencyError on acc-1", err)
		}
		if n := hs.appends.Load(); n != 3 {
			t.Fatalf("%d appends, want 3 (first try and 2 retries)", n)
		}
		st, _, _ := r.Load(t.Context(), "acc-1")
		if st.Balance != 3 {
			t.Fatalf("balance %d, want 3: only the competing deposits", st.Balance)
		}
	})
}

func TestIdempotentCommand(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		r := newRepo(t, e.store)
		must(t, r, "acc-1", account.Open{Owner: "ann"})
		cmdID := uuid.New()
		first := must(t, r, "acc-1", account.Deposit{Amount: 1500}, aggregate.WithCommandID(cmdID))
		if first.Duplicate {
			t.Fatal("first handling reported as duplicate")
		}
		must(t, r, "acc-1", account.Deposit{Amount: 1}) // the stream moves on

		again := must(t, r, "acc-1", account.Deposit{Amount: 1500}, aggregate.WithCommandID(cmdID))
		if !again.Duplicate {
			t.Fatalf("retried command not reported as duplicate: %+v", again)
		}
		again.Duplicate = false
		if !reflect.DeepEqual(again, first) {
			t.Fatalf("retried command's result\n%+v\nwant the original\n%+v", again, first)
		}
		recs := streamRecords(t, e.store, "acc-1")
		if len(recs) != 4 {
			t.Fatalf("%d records, want 4: the command applied once", len(recs))
		}
		for i, rec := range recs[1:3] {
			if rec.ID != aggregate.EventID(cmdID, i) {
				t.Errorf("event %d has ID %s, want EventID(command, %d) = %s", i, rec.ID, i, aggregate.EventID(cmdID, i))
			}
			if rec.Metadata.Get(eventstore.MetaCausationID) != cmdID.String() || rec.Metadata.Get(eventstore.MetaCorrelationID) != cmdID.String() {
				t.Errorf("event %d metadata %v: want causation and correlation ID %s", i, rec.Metadata, cmdID)
			}
		}
	})
}

func TestIdempotentWhenDeciderNowRejects(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		r := newRepo(t, e.store)
		must(t, r, "acc-1", account.Open{Owner: "ann"})
		must(t, r, "acc-1", account.Deposit{Amount: 150})
		cmdID := uuid.New()
		first := must(t, r, "acc-1", account.Withdraw{Amount: 100}, aggregate.WithCommandID(cmdID))
		// Retried: the balance (50) no longer covers it, yet the answer is
		// the original result.
		again, err := r.Handle(t.Context(), "acc-1", account.Withdraw{Amount: 100}, aggregate.WithCommandID(cmdID))
		if err != nil {
			t.Fatalf("retried withdrawal: %v", err)
		}
		if !again.Duplicate || again.Version != first.Version || again.Position != first.Position ||
			again.State != first.State || !reflect.DeepEqual(again.Events, first.Events) {
			t.Fatalf("retried withdrawal: %+v, want the original %+v as duplicate", again, first)
		}
		if n := len(streamRecords(t, e.store, "acc-1")); n != 3 {
			t.Fatalf("%d records, want 3", n)
		}
		// Another command ID is a new command: rejected.
		if _, err := r.Handle(t.Context(), "acc-1", account.Withdraw{Amount: 100}, aggregate.WithCommandID(uuid.New())); !errors.As(err, new(*account.InsufficientFundsError)) {
			t.Fatalf("new withdrawal: got %v, want InsufficientFundsError", err)
		}
	})
}

func TestIdempotentWhenDeciderNowDecidesOtherEvents(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		r := newRepo(t, e.store)
		must(t, r, "acc-1", account.Open{Owner: "ann"})

		// Fewer events on the retry: the first deposit made the account
		// VIP (2 events); the retry would only deposit (1 event).
		fewer := uuid.New()
		first := must(t, r, "acc-1", account.Deposit{Amount: 1000}, aggregate.WithCommandID(fewer))
		if len(first.Events) != 2 {
			t.Fatalf("first deposit: %d events, want 2", len(first.Events))
		}
		again := must(t, r, "acc-1", account.Deposit{Amount: 1000}, aggregate.WithCommandID(fewer))
		if !again.Duplicate || !reflect.DeepEqual(again.Events, first.Events) || again.Version != first.Version || again.State != first.State {
			t.Fatalf("retry deciding fewer events: %+v, want the original %+v", again, first)
		}

		// More events on the retry: a deposit of 600 at 0 is one event; at
		// 600 it would also make the account VIP.
		must(t, r, "acc-2", account.Open{Owner: "bob"})
		more := uuid.New()
		first = must(t, r, "acc-2", account.Deposit{Amount: 600}, aggregate.WithCommandID(more))
		must(t, r, "acc-2", account.Deposit{Amount: 300})
		again = must(t, r, "acc-2", account.Deposit{Amount: 600}, aggregate.WithCommandID(more))
		if !again.Duplicate || !reflect.DeepEqual(again.Events, first.Events) || again.Version != first.Version || again.State != first.State {
			t.Fatalf("retry deciding more events: %+v, want the original %+v", again, first)
		}
		if n := len(streamRecords(t, e.store, "acc-1")); n != 3 {
			t.Fatalf("acc-1 has %d records, want 3", n)
		}
		if n := len(streamRecords(t, e.store, "acc-2")); n != 3 {
			t.Fatalf("acc-2 has %d records, want 3", n)
		}
	})
}

func TestCommandIDReusedOnAnotherStream(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		r := newRepo(t, e.store)
		must(t, r, "acc-1", account.Open{Owner: "ann"})
		must(t, r, "acc-2", account.Open{Owner: "bob"})
		cmdID := uuid.New()
		must(t, r, "acc-1", account.Deposit{Amount: 5}, aggregate.WithCommandID(cmdID))
		_, err := r.Handle(t.Context(), "acc-2", account.Deposit{Amount: 5}, aggregate.WithCommandID(cmdID))
		var reused *aggregate.CommandIDReusedError
		if !errors.As(err, &reused) || reused.OtherStream != "acc-1" || !errors.Is(err, eventstore.ErrDuplicateEvent) {
			t.Fatalf("got %v, want a *CommandIDReusedError naming acc-1 that matches ErrDuplicateEvent", err)
		}
		// A rejection on acc-2 with that ID stays a rejection.
		_, err = r.Handle(t.Context(), "acc-2", account.Withdraw{Amount: 5}, aggregate.WithCommandID(cmdID))
		if !errors.As(err, new(*account.InsufficientFundsError)) {
			t.Fatalf("got %v, want the decider's rejection", err)
		}
	})
}

func TestMetadataPropagation(t *testing.T) {
	type ctxKey struct{}
	eachBackend(t, func(t *testing.T, e env) {
		r := newRepo(t, e.store, aggregate.WithMetadataFrom(func(ctx context.Context) eventstore.Metadata {
			id, _ := ctx.Value(ctxKey{}).(string)
			return eventstore.Metadata{eventstore.MetaCorrelationID: id, "tenant": "t1"}
		}))
		ctx := context.WithValue(t.Context(), ctxKey{}, "corr-9")
		cmdID := uuid.New()
		if _, err := r.Handle(ctx, "acc-1", account.Open{Owner: "ann"},
			aggregate.WithCommandID(cmdID), aggregate.WithMetadata(eventstore.Metadata{"tenant": "t2", "user": "u"})); err != nil {
			t.Fatal(err)
		}
		md := streamRecords(t, e.store, "acc-1")[0].Metadata
		want := map[string]string{
			eventstore.MetaCorrelationID: "corr-9",
			eventstore.MetaCausationID:   cmdID.String(),
			"tenant":                     "t2",
			"user":                       "u",
		}
		for k, v := range want {
			if md.Get(k) != v {
				t.Errorf("metadata %q = %q, want %q (all: %v)", k, md.Get(k), v, md)
			}
		}
	})
}

func TestSnapshotPlusTailEqualsFullLoad(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		hs := &hookStore{Store: e.store}
		r := newRepo(t, hs, aggregate.WithSnapshots(e.snaps, snapshot.EveryN(10)))
		full := newRepo(t, e.store)
		must(t, r, "acc-1", account.Open{Owner: "ann"})
		for i := range 24 {
			must(t, r, "acc-1", account.Deposit{Amount: int64(10 + i)})
		}
		if err := r.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		snap, err := e.snaps.Load(t.Context(), "acc-1")
		// Snapshots are taken at 10 and 20; a later one only if a save
		// was still in flight when the next command loaded the stream.
		if err != nil || snap.Version < 20 || snap.SchemaVersion != 1 {
			t.Fatalf("snapshot = %+v, %v; want version 20 or later, schema 1", snap, err)
		}
		hs.read.Store(0)
		st, v, err := r.Load(t.Context(), "acc-1")
		if err != nil {
			t.Fatal(err)
		}
		if n := hs.read.Load(); n != 25-snap.Version {
			t.Fatalf("Load read %d events, want %d (the tail after the snapshot at %d)", n, 25-snap.Version, snap.Version)
		}
		wantSt, wantV, err := full.Load(t.Context(), "acc-1")
		if err != nil || st != wantSt || v != wantV || v != 25 {
			t.Fatalf("snapshot + tail = %+v at %d; full replay = %+v at %d (%v)", st, v, wantSt, wantV, err)
		}
		if s := r.SnapshotStats(); s.Saved == 0 || s.Failed != 0 {
			t.Fatalf("snapshot stats %+v: want snapshots saved, none failed", s)
		}
	})
}

func TestSnapshotOfAnotherSchemaVersionIsIgnored(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		plain := newRepo(t, e.store)
		must(t, plain, "acc-1", account.Open{Owner: "ann"})
		must(t, plain, "acc-1", account.Deposit{Amount: 70})
		// A snapshot written by an older program with another encoding.
		if err := e.snaps.Save(t.Context(), snapshot.Snapshot{StreamID: "acc-1", Version: 2, SchemaVersion: 1,
			State: []byte(`{"Open":true,"Owner":"old","Balance":999999}`)}); err != nil {
			t.Fatal(err)
		}
		hs := &hookStore{Store: e.store}
		r := newRepo(t, hs, aggregate.WithSnapshots(e.snaps, snapshot.Never()), aggregate.WithStateSchemaVersion(2))
		st, v, err := r.Load(t.Context(), "acc-1")
		want := account.State{Open: true, Owner: "ann", Balance: 70}
		if err != nil || st != want || v != 2 {
			t.Fatalf("Load = %+v at %d (%v); want the full replay %+v at 2", st, v, err, want)
		}
		if n := hs.read.Load(); n != 2 {
			t.Fatalf("Load read %d events, want 2 (full replay)", n)
		}
		// The stale snapshot is replaced, at the current version, even
		// though the policy never asks for one.
		if err := r.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		snap, err := e.snaps.Load(t.Context(), "acc-1")
		if err != nil || snap.SchemaVersion != 2 || snap.Version != 2 {
			t.Fatalf("snapshot after load = %+v, %v; want schema 2 at version 2", snap, err)
		}
		hs.read.Store(0)
		if st, _, err := r.Load(t.Context(), "acc-1"); err != nil || st != want || hs.read.Load() != 0 {
			t.Fatalf("Load from the new snapshot = %+v, %v after reading %d events; want %+v from the snapshot alone", st, err, hs.read.Load(), want)
		}
	})
}

func TestCorruptSnapshotIsIgnored(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		r := newRepo(t, e.store, aggregate.WithSnapshots(e.snaps, snapshot.Never()))
		must(t, r, "acc-1", account.Open{Owner: "ann"})
		must(t, r, "acc-1", account.Deposit{Amount: 30})
		if err := e.snaps.Save(t.Context(), snapshot.Snapshot{StreamID: "acc-1", Version: 2, SchemaVersion: 1, State: []byte("{not json")}); err != nil {
			t.Fatal(err)
		}
		res := must(t, r, "acc-1", account.Deposit{Amount: 12})
		want := account.State{Open: true, Owner: "ann", Balance: 42}
		if res.State != want || res.Version != 3 {
			t.Fatalf("deposit over a corrupt snapshot: %+v, want %+v at 3", res, want)
		}
		if err := r.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		snap, err := e.snaps.Load(t.Context(), "acc-1")
		if err != nil || snap.Version < 2 || !strings.HasPrefix(string(snap.State), "{") || string(snap.State) == "{not json" {
			t.Fatalf("snapshot after the corrupt one = %+v, %v; want a fresh one", snap, err)
		}
		if st, v, err := r.Load(t.Context(), "acc-1"); err != nil || st != want || v != 3 {
			t.Fatalf("Load = %+v at %d, %v; want %+v at 3", st, v, err, want)
		}
	})
}

func TestUndecodableEventNamesStreamAndVersion(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		r := newRepo(t, e.store)
		must(t, r, "acc-1", account.Open{Owner: "ann"})
		if _, err := e.store.Append(t.Context(), "acc-1", eventstore.Exact(1),
			eventstore.Event{Type: "account.deposited", Data: []byte(`{"Amount":"lots"}`)}); err != nil {
			t.Fatal(err)
		}
		_, _, err := r.Load(t.Context(), "acc-1")
		if !errors.Is(err, eventstore.ErrDecode) {
			t.Fatalf("got %v, want ErrDecode", err)
		}
		if msg := err.Error(); !strings.Contains(msg, `"acc-1"`) || !strings.Contains(msg, "version 2") {
			t.Fatalf("error %q does not name the stream and version", msg)
		}
		if _, err := r.Handle(t.Context(), "acc-1", account.Deposit{Amount: 1}); !errors.Is(err, eventstore.ErrDecode) {
			t.Fatalf("Handle over an undecodable event: got %v, want ErrDecode", err)
		}

		if _, err := e.store.Append(t.Context(), "acc-2", eventstore.NoStream,
			eventstore.Event{Type: "account.frozen", Data: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
		_, _, err = r.Load(t.Context(), "acc-2")
		var unknown *eventstore.UnknownEventTypeError
		if !errors.As(err, &unknown) || unknown.Stream != "acc-2" || unknown.Version != 1 {
			t.Fatalf("got %v, want *UnknownEventTypeError at acc-2 version 1", err)
		}
	})
}

func TestSnapshotFailureDoesNotFailCommands(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		failing := &snapStore{Store: e.snaps, saveHook: func(context.Context, snapshot.Snapshot) error {
			return errors.New("disk full")
		}}
		r := newRepo(t, e.store, aggregate.WithSnapshots(failing, snapshot.EveryN(1)))
		must(t, r, "acc-1", account.Open{Owner: "ann"})
		res := must(t, r, "acc-1", account.Deposit{Amount: 5})
		if res.Version != 2 {
			t.Fatalf("result %+v", res)
		}
		if err := r.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		if s := r.SnapshotStats(); s.Failed == 0 || s.Saved != 0 {
			t.Fatalf("stats %+v: want failures counted, nothing saved", s)
		}
	})
}

func TestSnapshotterNeverBlocksHandle(t *testing.T) {
	e := backends[0].new(t)
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	slow := &snapStore{Store: e.snaps, saveHook: func(ctx context.Context, s snapshot.Snapshot) error {
		select {
		case started <- struct{}{}:
		default:
		}
		<-release
		return e.snaps.Save(ctx, s)
	}}
	r := newRepo(t, e.store, aggregate.WithSnapshots(slow, snapshot.EveryN(1)), aggregate.WithSnapshotQueue(2))
	must(t, r, "acc-0", account.Open{Owner: "x"})
	<-started // the snapshotter is stuck on acc-0
	for i := 1; i <= 10; i++ {
		must(t, r, fmt.Sprintf("acc-%d", i), account.Open{Owner: "x"})
	}
	must(t, r, "acc-1", account.Deposit{Amount: 3}) // coalesces with acc-1's waiting request
	s := r.SnapshotStats()
	if s.Dropped != 8 || s.Coalesced != 1 {
		t.Fatalf("stats %+v: want 8 dropped (queue of 2 full), 1 coalesced", s)
	}
	close(release)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if s := r.SnapshotStats(); s.Saved != 3 {
		t.Fatalf("stats after Close %+v: want 3 saved (acc-0, then the 2 waiting)", s)
	}
	snap, err := e.snaps.Load(t.Context(), "acc-1")
	if err != nil || snap.Version != 2 {
		t.Fatalf("acc-1 snapshot %+v, %v; want the coalesced request's version 2", snap, err)
	}
	// Commands still work after Close; their snapshots are dropped.
	must(t, r, "acc-1", account.Deposit{Amount: 1})
}

func TestDeciderFuncs(t *testing.T) {
	d := aggregate.DeciderFuncs[int, int, int]{}
	if d.Initial() != 0 || d.Evolve(3, 4) != 3 {
		t.Fatal("nil funcs: want zero initial state and unchanged state")
	}
	if _, err := d.Decide(0, 1); !errors.Is(err, aggregate.ErrNoDecide) {
		t.Fatalf("nil Decide: got %v, want ErrNoDecide", err)
	}
	counter := aggregate.DeciderFuncs[int, int, int]{
		InitialFunc: func() int { return 10 },
		DecideFunc: func(s, c int) ([]int, error) {
			if s+c < 0 {
				return nil, errors.New("below zero")
			}
			return []int{c}, nil
		},
		EvolveFunc: func(s, e int) int { return s + e },
	}
	if got := aggregate.Fold[int, int, int](counter, counter.Initial(), 1, 2, 3); got != 16 {
		t.Fatalf("Fold = %d, want 16", got)
	}
	r, err := aggregate.NewRepository[int, int, int](nil, eventstore.NewRegistry(), counter)
	if err == nil || r != nil {
		t.Fatal("NewRepository accepted a nil store")
	}
}

func TestDeciderFuncsInRepository(t *testing.T) {
	reg := eventstore.NewRegistry()
	if err := eventstore.Register[int](reg, "counter.added"); err != nil {
		t.Fatal(err)
	}
	counter := aggregate.DeciderFuncs[int, int, int]{
		DecideFunc: func(s, c int) ([]int, error) {
			if s+c < 0 {
				return nil, errors.New("below zero")
			}
			return []int{c}, nil
		},
		EvolveFunc: func(s, e int) int { return s + e },
	}
	r, err := aggregate.NewRepository(eventstore.Store(backends[0].new(t).store), reg, counter)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, c := range []int{5, -2, 4} {
		if _, err := r.Handle(t.Context(), "c", c); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Handle(t.Context(), "c", -100); err == nil || err.Error() == "below zero" || !strings.Contains(err.Error(), "below zero") {
		t.Fatalf("got %v, want the decider's error wrapped", err)
	}
	if s, v, err := r.Load(t.Context(), "c"); err != nil || s != 7 || v != 3 {
		t.Fatalf("Load = %d at %d, %v; want 7 at 3", s, v, err)
	}
}

func TestUnavailableSnapshotStoreFallsBackToReplay(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		down := &snapStore{Store: e.snaps, loadErr: errors.New("connection refused")}
		r := newRepo(t, e.store, aggregate.WithSnapshots(down, snapshot.EveryN(1)))
		must(t, r, "acc-1", account.Open{Owner: "ann"})
		res := must(t, r, "acc-1", account.Deposit{Amount: 8})
		if res.Version != 2 || res.State.Balance != 8 {
			t.Fatalf("result %+v", res)
		}
		if st, v, err := r.Load(t.Context(), "acc-1"); err != nil || v != 2 || st.Balance != 8 {
			t.Fatalf("Load = %+v at %d, %v", st, v, err)
		}
	})
}

func TestFlushHonoursContext(t *testing.T) {
	e := backends[0].new(t)
	release := make(chan struct{})
	stuck := &snapStore{Store: e.snaps, saveHook: func(ctx context.Context, s snapshot.Snapshot) error {
		<-release
		return e.snaps.Save(ctx, s)
	}}
	r := newRepo(t, e.store, aggregate.WithSnapshots(stuck, snapshot.EveryN(1)))
	must(t, r, "acc-1", account.Open{Owner: "ann"})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := r.Flush(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Flush with a cancelled context while a save hangs: got %v, want context.Canceled", err)
	}
	close(release)
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if s := r.SnapshotStats(); s.Saved != 1 {
		t.Fatalf("stats %+v, want 1 saved", s)
	}
}

// A command ID reused for another command on the same stream (another
// amount, another command type) is refused, not answered with the first
// command's result; a retry of the same command still is.
func TestCommandIDReusedForAnotherRequest(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		r := newRepo(t, e.store)
		must(t, r, "acc-1", account.Open{Owner: "ann"})
		cmdID := uuid.New()
		must(t, r, "acc-1", account.Deposit{Amount: 1500}, aggregate.WithCommandID(cmdID))
		for _, other := range []account.Command{account.Deposit{Amount: 1600}, account.Withdraw{Amount: 1500}} {
			_, err := r.Handle(t.Context(), "acc-1", other, aggregate.WithCommandID(cmdID))
			var reused *aggregate.CommandIDReusedError
			if !errors.As(err, &reused) || !reused.OtherRequest || !errors.Is(err, eventstore.ErrDuplicateEvent) {
				t.Fatalf("%T reusing the command ID: err %v, want a CommandIDReusedError for another request", other, err)
			}
		}
		again := must(t, r, "acc-1", account.Deposit{Amount: 1500}, aggregate.WithCommandID(cmdID))
		if !again.Duplicate {
			t.Fatalf("the same command again is not a duplicate: %+v", again)
		}
		if n := len(streamRecords(t, e.store, "acc-1")); n != 3 {
			t.Fatalf("%d records, want 3", n)
		}
	})
}
