package storetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/eskit/eskit/eventstore"
)

// subscription runs Subscribe in a goroutine and hands its records over a
// channel.
type subscription struct {
	recs   chan eventstore.Record
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	errs []error
}

func subscribe(ctx context.Context, s eventstore.Store, after eventstore.Position) *subscription {
	ctx, cancel := context.WithCancel(ctx)
	sub := &subscription{recs: make(chan eventstore.Record, 1000), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(sub.done)
		for r, err := range s.Subscribe(ctx, after) {
			if err != nil {
				sub.mu.Lock()
				sub.errs = append(sub.errs, err)
				sub.mu.Unlock()
				continue
			}
			select {
			case sub.recs <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	return sub
}

// next receives n records, failing the test if they do not arrive.
func (sub *subscription) next(t *testing.T, n int) []eventstore.Record {
	t.Helper()
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	var out []eventstore.Record
	for len(out) < n {
		select {
		case r := <-sub.recs:
			out = append(out, r)
		case <-sub.done:
			t.Fatalf("subscription ended after %d of %d records; errors: %v", len(out), n, sub.errors())
		case <-timeout.C:
			t.Fatalf("subscription delivered %d of %d records", len(out), n)
		}
	}
	return out
}

// stop cancels the subscription and checks that it ends without an error
// and without records beyond the ones received.
func (sub *subscription) stop(t *testing.T) {
	t.Helper()
	sub.cancel()
	select {
	case <-sub.done:
	case <-time.After(30 * time.Second):
		t.Fatal("Subscribe did not stop after its context was cancelled")
	}
	if errs := sub.errors(); len(errs) > 0 {
		t.Fatalf("Subscribe yielded errors: %v", errs)
	}
}

func (sub *subscription) errors() []error {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	return append([]error(nil), sub.errs...)
}

func (h Harness) testSubscribe(t *testing.T) {
	ctx, s := h.newStore(t)
	history := newEvents(3, "history")
	append1(ctx, t, s, "sub-1", eventstore.NoStream, history...)

	check := func(t *testing.T, got []eventstore.Record, streams []string, want []eventstore.Event, versions []int64) {
		t.Helper()
		for i, r := range got {
			checkRecords(t, streams[i], want[i:i+1], versions[i:i+1], []eventstore.Record{r})
			if i > 0 && !r.Position.After(got[i-1].Position) {
				t.Fatalf("record %d at %s does not follow %s", i, r.Position, got[i-1].Position)
			}
		}
	}

	var all []eventstore.Record
	t.Run("HistoryThenLive", func(t *testing.T) {
		sub := subscribe(ctx, s, eventstore.Position{})
		got := sub.next(t, 3)
		check(t, got, []string{"sub-1", "sub-1", "sub-1"}, history, []int64{1, 2, 3})
		live1 := newEvents(2, "live1")
		append1(ctx, t, s, "sub-2", eventstore.NoStream, live1...)
		got2 := sub.next(t, 2)
		check(t, got2, []string{"sub-2", "sub-2"}, live1, []int64{1, 2})
		live2 := newEvents(1, "live2")
		res := append1(ctx, t, s, "sub-1", eventstore.Exact(3), live2...)
		got3 := sub.next(t, 1)
		check(t, got3, []string{"sub-1"}, live2, []int64{4})
		if got3[0].Position != res.Position {
			t.Fatalf("live record at %s, append returned %s", got3[0].Position, res.Position)
		}
		sub.stop(t)
		all = append(append(got, got2...), got3...)
	})
	if len(all) != 6 {
		t.FailNow()
	}

	t.Run("AfterPosition", func(t *testing.T) {
		n := len(all)
		for i := range n {
			sub := subscribe(ctx, s, all[i].Position)
			rest := all[i+1:]
			got := sub.next(t, len(rest))
			for j, r := range got {
				if r.ID != rest[j].ID || r.Position != rest[j].Position {
					t.Fatalf("after %s: record %d is %s at %s, want %s at %s", all[i].Position, j, r.ID, r.Position, rest[j].ID, rest[j].Position)
				}
			}
			if i == n-2 {
				// From just before the end: the next record is live.
				ev := newEvent("Live", `{"x":1}`)
				append1(ctx, t, s, "sub-3", eventstore.NoStream, ev)
				if r := sub.next(t, 1)[0]; r.ID != ev.ID {
					t.Fatalf("live record %s, want %s", r.ID, ev.ID)
				}
				all = append(all, collect(t, s.ReadStream(ctx, "sub-3", 1))...)
			}
			sub.stop(t)
		}
	})

	t.Run("FromHead", func(t *testing.T) {
		waitFeed(ctx, t, s, all[len(all)-1].Position)
		sub := subscribe(ctx, s, head(ctx, t, s))
		evs := newEvents(2, "fromhead")
		append1(ctx, t, s, "sub-4", eventstore.NoStream, evs[0])
		append1(ctx, t, s, "sub-4", eventstore.Exact(1), evs[1])
		got := sub.next(t, 2)
		check(t, got, []string{"sub-4", "sub-4"}, evs, []int64{1, 2})
		sub.stop(t)
	})

	t.Run("CancelledBeforeStart", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		done := make(chan []error)
		go func() {
			var errs []error
			for _, err := range s.Subscribe(cctx, eventstore.Position{}) {
				if err != nil {
					errs = append(errs, err)
				}
			}
			done <- errs
		}()
		select {
		case errs := <-done:
			if len(errs) > 0 {
				t.Fatalf("Subscribe with a cancelled context yielded errors: %v", errs)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Subscribe with a cancelled context did not return")
		}
	})

	t.Run("CancelWhileWaiting", func(t *testing.T) {
		waitFeed(ctx, t, s, all[len(all)-1].Position)
		sub := subscribe(ctx, s, eventstore.Position{})
		sub.next(t, len(all))
		// Caught up: the subscription is waiting for new records.
		sub.stop(t)
	})
}
