package projection

import (
	"context"
	"sync"
	"testing"

	"github.com/eskit/eskit/eventstore"
)

// countingFeed is a feed of n records at positions {1, 1..n} that counts
// its reads by start position.
type countingFeed struct {
	n     int
	mu    sync.Mutex
	reads map[eventstore.Position]int
}

func (f *countingFeed) ReadAll(_ context.Context, after eventstore.Position, limit int) ([]eventstore.Record, error) {
	f.mu.Lock()
	f.reads[after]++
	f.mu.Unlock()
	var out []eventstore.Record
	for s := after.Seq + 1; s <= uint64(f.n) && len(out) < limit; s++ {
		out = append(out, eventstore.Record{Position: eventstore.Position{Tx: 1, Seq: s}})
	}
	return out, nil
}

func (f *countingFeed) Head(context.Context) (eventstore.Position, error) {
	return eventstore.Position{Tx: 1, Seq: uint64(f.n)}, nil
}

func (f *countingFeed) readsOf(p eventstore.Position) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads[p]
}

// A prefetched full page is read once and then served from the cache; a
// short (head) page is never kept, so a later read sees what the feed has
// then; a reader of its own drops the page it read.
func TestPageCachePrefetch(t *testing.T) {
	ctx := context.Background()
	feed := &countingFeed{n: 25, reads: map[eventstore.Position]int{}}
	var c pageCache
	var wg sync.WaitGroup
	run := func(fn func(context.Context)) bool {
		wg.Go(func() { fn(ctx) })
		return true
	}
	start := eventstore.Position{}
	second := eventstore.Position{Tx: 1, Seq: 10}
	third := eventstore.Position{Tx: 1, Seq: 20}

	c.prefetch(run, feed, second, 10)
	c.prefetch(run, feed, second, 10) // in flight or cached: no second read
	wg.Wait()
	if n := feed.readsOf(second); n != 1 {
		t.Fatalf("prefetched page read %d times, want 1", n)
	}
	recs, err := c.readAll(ctx, feed, second, 10, false)
	if err != nil || len(recs) != 10 || recs[0].Position.Seq != 11 {
		t.Fatalf("readAll after prefetch: %d records (%v), err %v", len(recs), recs, err)
	}
	if n := feed.readsOf(second); n != 1 {
		t.Fatalf("page read %d times after prefetch and readAll, want 1", n)
	}
	// Read by its only reader, the page left the cache.
	if _, err := c.readAll(ctx, feed, second, 10, false); err != nil {
		t.Fatal(err)
	}
	if n := feed.readsOf(second); n != 2 {
		t.Fatalf("page read %d times after being dropped, want 2", n)
	}

	// A shared full page stays for the next reader.
	if _, err := c.readAll(ctx, feed, start, 10, true); err != nil {
		t.Fatal(err)
	}
	if _, err := c.readAll(ctx, feed, start, 10, true); err != nil {
		t.Fatal(err)
	}
	if n := feed.readsOf(start); n != 1 {
		t.Fatalf("shared page read %d times, want 1", n)
	}

	// The head (a short page) is not kept: the next read asks the feed.
	c.prefetch(run, feed, third, 10)
	wg.Wait()
	feed.n = 30
	recs, err = c.readAll(ctx, feed, third, 10, true)
	if err != nil || len(recs) != 10 {
		t.Fatalf("read after the head grew: %d records, err %v", len(recs), err)
	}
	if n := feed.readsOf(third); n != 2 {
		t.Fatalf("head page read %d times, want 2", n)
	}

	// A prefetch that cannot start leaves the page to its readers.
	refuse := func(func(context.Context)) bool { return false }
	later := eventstore.Position{Tx: 1, Seq: 5}
	c.prefetch(refuse, feed, later, 10)
	if recs, err := c.readAll(ctx, feed, later, 10, false); err != nil || len(recs) != 10 {
		t.Fatalf("read after a refused prefetch: %d records, err %v", len(recs), err)
	}
}
