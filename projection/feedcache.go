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
	order []pageKey // oldest first
}

type pageKey struct {
	after eventstore.Position
	limit int
}

type page struct {
	done chan struct{}
	recs []eventstore.Record
	err  error
}

// cachedPages is how many full pages a runner keeps.
const cachedPages = 16

// readAll reads a page of the feed through the cache; concurrent readers of
// the same page wait for one read.
func (c *pageCache) readAll(ctx context.Context, feed eventstore.FeedReader, after eventstore.Position, limit int) ([]eventstore.Record, error) {
	key := pageKey{after, limit}
	c.mu.Lock()
	if p, ok := c.pages[key]; ok {
		c.mu.Unlock()
		select {
		case <-p.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if p.err == nil {
			return p.recs, nil
		}
		return feed.ReadAll(ctx, after, limit)
	}
	p := &page{done: make(chan struct{})}
	if c.pages == nil {
		c.pages = make(map[pageKey]*page)
	}
	c.pages[key] = p
	c.mu.Unlock()

	p.recs, p.err = feed.ReadAll(ctx, after, limit)
	c.mu.Lock()
	if p.err != nil || len(p.recs) < limit {
		delete(c.pages, key) // failed, or the head: not shareable
	} else {
		c.order = append(c.order, key)
		for len(c.order) > cachedPages {
			delete(c.pages, c.order[0])
			c.order = c.order[1:]
		}
	}
	c.mu.Unlock()
	close(p.done)
	return p.recs, p.err
}
