package eventstore_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/eskit/eskit/eventstore"
)

// fakeFeed is a FeedReader over an in-memory slice whose records can be
// added while a subscription runs.
type fakeFeed struct {
	mu      sync.Mutex
	recs    []eventstore.Record
	changed chan struct{}
	calls   []call
	failAt  int // ReadAll call (1-based) that fails; 0 for none
}

type call struct {
	after eventstore.Position
	limit int
}

var errFeed = errors.New("feed broke")

func newFakeFeed(n int) *fakeFeed {
	f := &fakeFeed{changed: make(chan struct{})}
	f.add(n)
	return f
}

func (f *fakeFeed) add(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for range n {
		i := uint64(len(f.recs) + 1)
		f.recs = append(f.recs, eventstore.Record{Event: eventstore.Event{Type: "T"}, Version: int64(i), Position: eventstore.Position{Tx: 10 + i, Seq: i}})
	}
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeFeed) ReadAll(ctx context.Context, after eventstore.Position, limit int) ([]eventstore.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call{after, limit})
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(f.calls) == f.failAt {
		return nil, errFeed
	}
	var out []eventstore.Record
	for _, r := range f.recs {
		if r.Position.After(after) && len(out) < limit {
			out = append(out, r)
		}
	}
	return out, nil
}

func (f *fakeFeed) Head(context.Context) (eventstore.Position, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.recs) == 0 {
		return eventstore.Position{}, nil
	}
	return f.recs[len(f.recs)-1].Position, nil
}

// wait blocks until a record after the position exists.
func (f *fakeFeed) wait(ctx context.Context, after eventstore.Position) error {
	f.mu.Lock()
	ch := f.changed
	ahead := len(f.recs) > 0 && f.recs[len(f.recs)-1].Position.After(after)
	f.mu.Unlock()
	if ahead {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *fakeFeed) readCalls() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func versions(recs []eventstore.Record) []int64 {
	out := make([]int64, len(recs))
	for i, r := range recs {
		out[i] = r.Version
	}
	return out
}

func seq(from, to int64) []int64 {
	var out []int64
	for v := from; v <= to; v++ {
		out = append(out, v)
	}
	return out
}

func TestCatchUpPagesThenWaits(t *testing.T) {
	f := newFakeFeed(7)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	waits := 0
	wait := func(ctx context.Context, after eventstore.Position) error {
		waits++
		if after != f.recs[6].Position {
			t.Errorf("wait after %s, want the last record's Position", after)
		}
		cancel()
		return ctx.Err()
	}
	var got []eventstore.Record
	for r, err := range eventstore.CatchUp(ctx, f, eventstore.Position{}, 3, wait) {
		if err != nil {
			t.Fatalf("CatchUp yielded %v", err)
		}
		got = append(got, r)
	}
	if !slices.Equal(versions(got), seq(1, 7)) {
		t.Fatalf("got versions %v", versions(got))
	}
	want := []call{{eventstore.Position{}, 3}, {f.recs[2].Position, 3}, {f.recs[5].Position, 3}}
	if !slices.Equal(f.readCalls(), want) {
		t.Fatalf("ReadAll calls %v, want %v", f.readCalls(), want)
	}
	if waits != 1 {
		t.Fatalf("wait ran %d times, want once (only after a short page)", waits)
	}
}

func TestCatchUpFullLastPage(t *testing.T) {
	// A full page may not be the end: CatchUp reads again before waiting.
	f := newFakeFeed(6)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	wait := func(ctx context.Context, _ eventstore.Position) error { cancel(); return ctx.Err() }
	got, err := eventstore.Collect(eventstore.CatchUp(ctx, f, eventstore.Position{}, 3, wait))
	if err != nil || len(got) != 6 {
		t.Fatalf("got %d records, %v", len(got), err)
	}
	if calls := f.readCalls(); len(calls) != 3 || calls[2].after != f.recs[5].Position {
		t.Fatalf("ReadAll calls %v", calls)
	}
}

func TestCatchUpAfterPositionAndDefaultBatch(t *testing.T) {
	f := newFakeFeed(5)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	wait := func(ctx context.Context, _ eventstore.Position) error { cancel(); return ctx.Err() }
	got, err := eventstore.Collect(eventstore.CatchUp(ctx, f, f.recs[1].Position, 0, wait))
	if err != nil || !slices.Equal(versions(got), seq(3, 5)) {
		t.Fatalf("got %v, %v; want versions 3..5", versions(got), err)
	}
	if calls := f.readCalls(); calls[0].limit != eventstore.DefaultBatchSize || calls[0].after != f.recs[1].Position {
		t.Fatalf("first ReadAll call %v", calls[0])
	}
}

func TestCatchUpLive(t *testing.T) {
	f := newFakeFeed(2)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var got []eventstore.Record
	for r, err := range eventstore.CatchUp(ctx, f, eventstore.Position{}, 10, f.wait) {
		if err != nil {
			t.Fatalf("CatchUp yielded %v", err)
		}
		got = append(got, r)
		switch len(got) {
		case 2:
			go f.add(3)
		case 5:
			go f.add(1)
		case 6:
			cancel()
		}
	}
	if !slices.Equal(versions(got), seq(1, 6)) {
		t.Fatalf("got versions %v", versions(got))
	}
}

func TestCatchUpBreak(t *testing.T) {
	f := newFakeFeed(10)
	wait := func(context.Context, eventstore.Position) error {
		t.Error("wait called after the consumer stopped")
		return nil
	}
	n := 0
	for range eventstore.CatchUp(t.Context(), f, eventstore.Position{}, 4, wait) {
		if n++; n == 5 {
			break
		}
	}
	if calls := f.readCalls(); len(calls) != 2 {
		t.Fatalf("ReadAll ran %d times after the consumer stopped at record 5, want 2", len(calls))
	}
}

func TestCatchUpErrors(t *testing.T) {
	t.Run("ReadAll", func(t *testing.T) {
		f := newFakeFeed(5)
		f.failAt = 2
		got, err := eventstore.Collect(eventstore.CatchUp(t.Context(), f, eventstore.Position{}, 3, f.wait))
		if !errors.Is(err, errFeed) || len(got) != 3 {
			t.Fatalf("got %d records, %v; want 3 then the feed's error", len(got), err)
		}
	})
	t.Run("ReadAllAfterYieldingError", func(t *testing.T) {
		f := newFakeFeed(1)
		f.failAt = 1
		n := 0
		for _, err := range eventstore.CatchUp(t.Context(), f, eventstore.Position{}, 3, f.wait) {
			n++
			if !errors.Is(err, errFeed) {
				t.Fatalf("yielded %v", err)
			}
		}
		if n != 1 {
			t.Fatalf("yielded %d items after a failure, want 1", n)
		}
	})
	t.Run("Wait", func(t *testing.T) {
		f := newFakeFeed(1)
		errWait := errors.New("wait broke")
		got, err := eventstore.Collect(eventstore.CatchUp(t.Context(), f, eventstore.Position{}, 3,
			func(context.Context, eventstore.Position) error { return errWait }))
		if !errors.Is(err, errWait) || len(got) != 1 {
			t.Fatalf("got %d records, %v; want 1 then the wait error", len(got), err)
		}
	})
	t.Run("CancelledReadIsSilent", func(t *testing.T) {
		f := newFakeFeed(3)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		for _, err := range eventstore.CatchUp(ctx, f, eventstore.Position{}, 3, f.wait) {
			t.Fatalf("cancelled CatchUp yielded %v", err)
		}
	})
	t.Run("CancelledWaitIsSilent", func(t *testing.T) {
		f := newFakeFeed(2)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		n := 0
		for _, err := range eventstore.CatchUp(ctx, f, eventstore.Position{}, 3, f.wait) {
			if err != nil {
				t.Fatalf("CatchUp yielded %v after cancel", err)
			}
			if n++; n == 2 {
				cancel()
			}
		}
		if n != 2 {
			t.Fatalf("yielded %d records, want 2", n)
		}
	})
}

func TestCollect(t *testing.T) {
	boom := errors.New("boom")
	seq := func(yield func(eventstore.Record, error) bool) {
		if !yield(eventstore.Record{Version: 1}, nil) {
			return
		}
		if !yield(eventstore.Record{}, boom) {
			return
		}
		yield(eventstore.Record{Version: 3}, nil)
	}
	got, err := eventstore.Collect(seq)
	if !errors.Is(err, boom) || len(got) != 1 || got[0].Version != 1 {
		t.Fatalf("Collect = %v, %v", got, err)
	}
}
