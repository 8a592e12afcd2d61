package aggregate

import (
	"container/list"
	"sync"
)

// cachedState is a stream's state at a version, as the repository last
// saw it committed.
type cachedState[S any] struct {
	stream  string
	state   S
	version int64
	// snapVersion is the version of the stream's latest snapshot the
	// repository knows of (loaded or requested), 0 if none.
	snapVersion int64
}

// stateCache is a bounded, least-recently-used map from stream IDs to their
// states. It is safe for concurrent use. An entry is only ever a guess: the
// repository appends with the entry's version as the expected version, so a
// stale entry costs a conflict and a reload, never a wrong decision.
type stateCache[S any] struct {
	mu    sync.Mutex
	limit int
	order *list.List // of *cachedState[S], most recently used first
	index map[string]*list.Element
}

func newStateCache[S any](limit int) *stateCache[S] {
	return &stateCache[S]{limit: limit, order: list.New(), index: make(map[string]*list.Element, min(limit, 1<<16))}
}

// get returns the stream's entry and marks it as recently used.
func (c *stateCache[S]) get(stream string) (cachedState[S], bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.index[stream]
	if !ok {
		return cachedState[S]{}, false
	}
	c.order.MoveToFront(el)
	return *el.Value.(*cachedState[S]), true
}

// put stores the stream's state unless the cache already holds a later
// version of it, and evicts the least recently used entries beyond the
// limit.
func (c *stateCache[S]) put(e cachedState[S]) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.index[e.stream]; ok {
		cur := el.Value.(*cachedState[S])
		if cur.version <= e.version {
			*cur = e
		}
		c.order.MoveToFront(el)
		return
	}
	c.index[e.stream] = c.order.PushFront(&e)
	for c.order.Len() > c.limit {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.index, last.Value.(*cachedState[S]).stream)
	}
}

// drop removes the stream's entry.
func (c *stateCache[S]) drop(stream string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.index[stream]; ok {
		c.order.Remove(el)
		delete(c.index, stream)
	}
}

// len returns the number of entries.
func (c *stateCache[S]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
