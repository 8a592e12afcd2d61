package aggregate_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/aggregate/internal/account"
	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/snapshot"
)

func TestStateCacheSkipsLoads(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		hs := &hookStore{Store: e.store}
		r := newRepo(t, hs, aggregate.WithStateCache(16))
		res := must(t, r, "acc-1", account.Open{Owner: "ann"})
		if res.Version != 1 || !reflect.DeepEqual(res.Events, []account.Event{account.Opened{Owner: "ann"}}) {
			t.Fatalf("open: %+v", res)
		}
		must(t, r, "acc-1", account.Deposit{Amount: 100})
		res = must(t, r, "acc-1", account.Deposit{Amount: 900})
		want := account.State{Open: true, Owner: "ann", Balance: 1000, VIP: true}
		if res.Version != 4 || res.State != want || len(res.Events) != 2 {
			t.Fatalf("deposit: %+v, want version 4, two events, state %+v", res, want)
		}
		if n := hs.reads.Load(); n != 0 {
			t.Fatalf("%d stream reads, want none: a new stream is guessed, then the cache knows it", n)
		}
		if n := hs.appends.Load(); n != 3 {
			t.Fatalf("%d appends, want 3", n)
		}
		recs := streamRecords(t, e.store, "acc-1")
		if len(recs) != 4 || recs[3].Position != res.Position {
			t.Fatalf("stored %d records; want 4, the last at the result's position", len(recs))
		}
		st, v, err := newRepo(t, e.store).Load(t.Context(), "acc-1")
		if err != nil || st != want || v != 4 {
			t.Fatalf("Load = %+v, %d, %v; want %+v at 4", st, v, err, want)
		}
	})
}

func TestStateCacheStaleAfterAnotherWriter(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		hs := &hookStore{Store: e.store}
		r := newRepo(t, hs, aggregate.WithStateCache(16))
		other := newRepo(t, e.store)
		must(t, r, "acc-1", account.Open{Owner: "ann"})
		must(t, r, "acc-1", account.Deposit{Amount: 100})

		// The cache says version 2; the stream is at 3: conflict, reload,
		// decide again.
		must(t, other, "acc-1", account.Deposit{Amount: 50})
		hs.appends.Store(0)
		res := must(t, r, "acc-1", account.Deposit{Amount: 10})
		if res.Version != 4 || res.State.Balance != 160 {
			t.Fatalf("deposit on a stale cache: %+v, want version 4, balance 160", res)
		}
		if n := hs.appends.Load(); n != 2 {
			t.Fatalf("%d appends, want 2 (the guess conflicts, the reloaded decision succeeds)", n)
		}

		// The cached balance (160) rejects the withdrawal, the stored one
		// (260) accepts it: the guess's rejection is never returned.
		must(t, other, "acc-1", account.Deposit{Amount: 100})
		res = must(t, r, "acc-1", account.Withdraw{Amount: 200})
		if res.Version != 6 || res.State.Balance != 60 {
			t.Fatalf("withdrawal the cache would reject: %+v, want version 6, balance 60", res)
		}

		// The cached balance (60) accepts the withdrawal, the stored one
		// (10) rejects it: the rejection is the stored state's.
		must(t, other, "acc-1", account.Withdraw{Amount: 50})
		_, err := r.Handle(t.Context(), "acc-1", account.Withdraw{Amount: 30})
		var insufficient *account.InsufficientFundsError
		var rej *aggregate.RejectedError
		if !errors.As(err, &insufficient) || insufficient.Balance != 10 || !errors.As(err, &rej) || rej.Version != 7 {
			t.Fatalf("withdrawal the stream no longer covers: got %v, want InsufficientFunds at balance 10, version 7", err)
		}
		if n := len(streamRecords(t, e.store, "acc-1")); n != 7 {
			t.Fatalf("%d records, want 7", n)
		}
	})
}

func TestStateCacheGuessOnExistingStream(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		other := newRepo(t, e.store)
		for i, owner := range []string{"bob", "bob", "bob"} {
			must(t, other, fmt.Sprintf("acc-%d", i+1), account.Open{Owner: owner})
		}
		r := newRepo(t, e.store, aggregate.WithStateCache(16))

		// Accepted on the initial state, rejected on the stored one: the
		// stored state's rejection.
		_, err := r.Handle(t.Context(), "acc-1", account.Open{Owner: "alice"})
		var rej *aggregate.RejectedError
		if !errors.Is(err, account.ErrAlreadyOpen) || !errors.As(err, &rej) || rej.Version != 1 {
			t.Fatalf("open of bob's account for alice: got %v, want ErrAlreadyOpen at version 1", err)
		}
		// Rejected on the initial state, accepted on the stored one.
		res, err := r.Handle(t.Context(), "acc-2", account.Deposit{Amount: 5})
		if err != nil || res.Version != 2 || res.State.Balance != 5 {
			t.Fatalf("deposit to an open account: %+v, %v; want version 2, balance 5", res, err)
		}
		// Accepted on the initial state, accepted without events on the
		// stored one.
		res, err = r.Handle(t.Context(), "acc-3", account.Open{Owner: "bob"})
		if err != nil || res.Version != 1 || len(res.Events) != 0 || res.Duplicate || res.State.Owner != "bob" {
			t.Fatalf("open of bob's account for bob: %+v, %v; want no events at version 1", res, err)
		}
		// A stream that really is new: the initial state's rejection.
		if _, err := r.Handle(t.Context(), "acc-4", account.Deposit{Amount: 1}); !errors.Is(err, account.ErrNotOpen) {
			t.Fatalf("deposit to a missing account: got %v, want ErrNotOpen", err)
		}
		for stream, want := range map[string]int{"acc-1": 1, "acc-2": 2, "acc-3": 1, "acc-4": 0} {
			if n := streamLen(t, e.store, stream); n != want {
				t.Errorf("%s has %d records, want %d", stream, n, want)
			}
		}
	})
}

func TestStateCacheIdempotentCommand(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		r := newRepo(t, e.store, aggregate.WithStateCache(16))
		other := newRepo(t, e.store)
		openID, depositID := uuid.New(), uuid.New()
		opened := must(t, r, "acc-1", account.Open{Owner: "ann"}, aggregate.WithCommandID(openID))
		first := must(t, r, "acc-1", account.Deposit{Amount: 1500}, aggregate.WithCommandID(depositID))
		if first.Duplicate || len(first.Events) != 2 {
			t.Fatalf("first deposit: %+v", first)
		}
		same := func(what string, got, want aggregate.Result[account.State, account.Event]) {
			t.Helper()
			if !got.Duplicate {
				t.Fatalf("%s: not reported as duplicate: %+v", what, got)
			}
			got.Duplicate = false
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s:\n%+v\nwant the original\n%+v", what, got, want)
			}
		}
		same("retry on the cached state", must(t, r, "acc-1", account.Deposit{Amount: 1500}, aggregate.WithCommandID(depositID)), first)
		must(t, other, "acc-1", account.Deposit{Amount: 1})
		same("retry after another writer", must(t, r, "acc-1", account.Deposit{Amount: 1500}, aggregate.WithCommandID(depositID)), first)

		// A repository that has never seen the stream guesses it is new.
		fresh := newRepo(t, e.store, aggregate.WithStateCache(16))
		same("retry of the open on a fresh cache", must(t, fresh, "acc-1", account.Open{Owner: "ann"}, aggregate.WithCommandID(openID)), opened)
		fresh = newRepo(t, e.store, aggregate.WithStateCache(16))
		same("retry of the deposit on a fresh cache", must(t, fresh, "acc-1", account.Deposit{Amount: 1500}, aggregate.WithCommandID(depositID)), first)
		if n := len(streamRecords(t, e.store, "acc-1")); n != 4 {
			t.Fatalf("%d records, want 4: each command applied once", n)
		}

		// The open's ID sent to a new stream: its events are elsewhere.
		_, err := fresh.Handle(t.Context(), "acc-2", account.Open{Owner: "ann"}, aggregate.WithCommandID(openID))
		var reused *aggregate.CommandIDReusedError
		if !errors.As(err, &reused) || reused.OtherStream != "acc-1" {
			t.Fatalf("command ID reused on a new stream: got %v, want a *CommandIDReusedError naming acc-1", err)
		}
		if n := streamLen(t, e.store, "acc-2"); n != 0 {
			t.Fatalf("acc-2 has %d records, want none", n)
		}
	})
}

func TestStateCacheConcurrentWriters(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		opts := []aggregate.Option{aggregate.WithStateCache(2), aggregate.WithMaxRetries(1000), aggregate.WithBackoff(backoff.Policy{})}
		repos := []*repo{newRepo(t, e.store, opts...), newRepo(t, e.store, opts...)}
		streams := []string{"acc-1", "acc-2", "acc-3"}
		for _, s := range streams {
			must(t, repos[0], s, account.Open{Owner: "ann"})
		}
		const workers, each = 6, 10
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				r := repos[w%len(repos)]
				for i := range each {
					s := streams[(w+i)%len(streams)]
					res, err := r.Handle(context.Background(), s, account.Deposit{Amount: 1})
					if err != nil {
						t.Errorf("worker %d deposit %d on %s: %v", w, i, s, err)
						return
					}
					if res.State.Balance != res.Version-1 {
						t.Errorf("worker %d: %s at version %d has balance %d", w, s, res.Version, res.State.Balance)
					}
				}
			})
		}
		wg.Wait()
		plain := newRepo(t, e.store)
		var total int64
		for _, s := range streams {
			st, v, err := plain.Load(t.Context(), s)
			if err != nil || st.Balance != v-1 {
				t.Fatalf("%s: %+v at version %d, %v", s, st, v, err)
			}
			total += st.Balance
		}
		if total != workers*each {
			t.Fatalf("total balance %d after %d deposits", total, workers*each)
		}
	})
}

func TestStateCacheIsBounded(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		hs := &hookStore{Store: e.store}
		r := newRepo(t, hs, aggregate.WithStateCache(2))
		for i := range 5 {
			must(t, r, fmt.Sprintf("acc-%d", i), account.Open{Owner: "ann"})
			if n := aggregate.CachedStreams(r); n > 2 {
				t.Fatalf("cache holds %d streams, bound 2", n)
			}
		}
		// The most recent stream is cached; the oldest was evicted and
		// needs a load.
		must(t, r, "acc-4", account.Deposit{Amount: 1})
		if n := hs.reads.Load(); n != 0 {
			t.Fatalf("%d stream reads for a cached stream, want 0", n)
		}
		res := must(t, r, "acc-0", account.Deposit{Amount: 1})
		if n := hs.reads.Load(); n != 1 || res.Version != 2 {
			t.Fatalf("evicted stream: %d reads, version %d; want 1 read, version 2", n, res.Version)
		}
		if n := aggregate.CachedStreams(r); n != 2 {
			t.Fatalf("cache holds %d streams, want 2", n)
		}

		off := newRepo(t, e.store, aggregate.WithStateCache(0))
		must(t, off, "acc-0", account.Deposit{Amount: 1})
		if n := aggregate.CachedStreams(off); n != 0 {
			t.Fatalf("a repository without cache holds %d streams", n)
		}
	})
}

func TestStateCacheKeepsSnapshotPolicy(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		var (
			mu    sync.Mutex
			saved []int64
		)
		snaps := &snapStore{Store: e.snaps}
		snaps.saveHook = func(ctx context.Context, s snapshot.Snapshot) error {
			mu.Lock()
			saved = append(saved, s.Version)
			mu.Unlock()
			return e.snaps.Save(ctx, s)
		}
		hs := &hookStore{Store: e.store}
		r := newRepo(t, hs, aggregate.WithStateCache(16), aggregate.WithSnapshots(snaps, snapshot.EveryN(3)))
		must(t, r, "acc-1", account.Open{Owner: "ann"})
		var last aggregate.Result[account.State, account.Event]
		for range 7 {
			last = must(t, r, "acc-1", account.Deposit{Amount: 10})
		}
		if err := r.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		got := append([]int64(nil), saved...)
		mu.Unlock()
		// Requests at 3 and 6 (a request still queued is replaced by the
		// next one of its stream); none in between.
		if len(got) == 0 || got[len(got)-1] != 6 {
			t.Fatalf("snapshots saved at versions %v; want the last at 6", got)
		}
		for _, v := range got {
			if v%3 != 0 {
				t.Fatalf("snapshots saved at versions %v; want multiples of 3 only", got)
			}
		}
		// A repository loading the stream uses the snapshot and the tail.
		hs.read.Store(0)
		st, v, err := newRepo(t, hs, aggregate.WithSnapshots(e.snaps, snapshot.Never())).Load(t.Context(), "acc-1")
		if err != nil || st != last.State || v != 8 {
			t.Fatalf("Load = %+v at %d, %v; want %+v at 8", st, v, err, last.State)
		}
		if n := hs.read.Load(); n != 2 {
			t.Fatalf("Load read %d events, want 2 (the tail after the snapshot at 6)", n)
		}
	})
}

// streamLen returns how many records the stream has (0 when it does not
// exist).
func streamLen(t testing.TB, s eventstore.Store, stream string) int {
	t.Helper()
	recs, err := eventstore.Collect(s.ReadStream(context.Background(), stream, 1))
	if errors.Is(err, eventstore.ErrStreamNotFound) {
		return 0
	}
	if err != nil {
		t.Fatalf("read stream %s: %v", stream, err)
	}
	return len(recs)
}
