package projection

import (
	"context"
	"sync"

	"github.com/eskit/eskit/eventstore"
)

// pageCache shares full pages of the feed between the partitions of a
// runner: partitions catching up or rebuilding from the same position read
// the same pages, and each page is read from the store once per process
// instead of once per partition. Only full pages are kept: the feed never
// changes before its safe point, so a full page read after a position is
// the same for every reader, while a short one (the head) may grow.
type pageCache struct {
	mu    sync.Mutex
	pages map[pageKey]*page
	order []*page // the cached full pages, oldest first
}

type pageKey struct {
	after eventstore.Position
	limit int
}

type page struct {
	key  pageKey
	done chan struct{}
	recs []eventstore.Record
	err  error
}

// cachedPages is how many full pages a runner keeps.
const cachedPages = 16

// readAll reads a page of the feed through the cache; concurrent readers of
// the same page wait for one read. A page read for one reader only (shared
// false: a projection of one partition) leaves the cache once read.
func (c *pageCache) readAll(ctx context.Context, feed eventstore.FeedReader, after eventstore.Position, limit int, shared bool) ([]eventstore.Record, error) {
	key := pageKey{after, limit}
	p, fresh := c.start(key)
	if fresh {
		c.fill(ctx, feed, key, p)
	} else {
		select {
		case <-p.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if !shared {
		c.drop(key, p)
	}
	if p.err != nil && !fresh {
		// The read this one waited for failed (its reader's context may
		// have ended): read again.
		return feed.ReadAll(ctx, after, limit)
	}
	return p.recs, p.err
}

// prefetch reads the page after a position in the background (with run),
// unless it is cached or being read already, so that the next readAll of
// it finds it read or in flight.
func (c *pageCache) prefetch(run func(fn func(ctx context.Context)) bool, feed eventstore.FeedReader, after eventstore.Position, limit int) {
	key := pageKey{after, limit}
	p, fresh := c.start(key)
	if !fresh {
		return
	}
	if !run(func(ctx context.Context) { c.fill(ctx, feed, key, p) }) {
		// run did not take the work (the runner is stopping): readers of
		// the page read it themselves.
		p.err = context.Canceled
		c.drop(key, p)
		close(p.done)
	}
}

// start returns the page of key, and whether it is new (the caller reads
// it with fill).
func (c *pageCache) start(key pageKey) (*page, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.pages[key]; ok {
		return p, false
	}
	p := &page{key: key, done: make(chan struct{})}
	if c.pages == nil {
		c.pages = make(map[pageKey]*page)
	}
	c.pages[key] = p
	return p, true
}

// fill reads a page that start created. Only full pages stay in the cache.
func (c *pageCache) fill(ctx context.Context, feed eventstore.FeedReader, key pageKey, p *page) {
	p.recs, p.err = feed.ReadAll(ctx, key.after, key.limit)
	c.mu.Lock()
	if p.err != nil || len(p.recs) < key.limit {
		if c.pages[key] == p {
			delete(c.pages, key) // failed, or the head: not shareable
		}
	} else if c.pages[key] == p {
		c.order = append(c.order, p)
		for len(c.order) > cachedPages {
			c.remove(c.order[0])
		}
	}
	c.mu.Unlock()
	close(p.done)
}

// drop removes the page of key from the cache, if it is p.
func (c *pageCache) drop(key pageKey, p *page) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pages[key] == p {
		c.remove(p)
	}
}

// remove takes p out of the cache and out of the eviction order (so that
// the order holds only cached pages, and evicting never removes a newer
// page read again under the same key). c.mu is held.
func (c *pageCache) remove(p *page) {
	if c.pages[p.key] == p {
		delete(c.pages, p.key)
	}
	for i, q := range c.order {
		if q == p {
			c.order = append(c.order[:i], c.order[i+1:]...)
			break
		}
	}
}
