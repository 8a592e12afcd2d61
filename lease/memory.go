package lease

import (
	"context"
	"sync"
	"time"
)

// MemoryStore keeps leases in memory, for workers that share one process
// (the embedded mode) and for tests. Its clock is the process's (or the
// one WithClock gives); a lease outlives nothing, so its tokens restart at
// 1 with each MemoryStore. It is safe for concurrent use.
type MemoryStore struct {
	now func() time.Time

	// mu guards leases; Guard holds it shared across the guarded write,
	// so that no acquisition or renewal interleaves with it.
	mu     sync.RWMutex
	leases map[string]*memLease
}

type memLease struct {
	holder  string
	token   uint64
	expires time.Time // zero: released
}

var _ Store = (*MemoryStore)(nil)

// MemoryOption configures a MemoryStore.
type MemoryOption func(*MemoryStore)

// WithClock makes the store read the time from now (time.Now by default):
// tests move a fake clock instead of sleeping. now must be safe for
// concurrent use.
func WithClock(now func() time.Time) MemoryOption { return func(m *MemoryStore) { m.now = now } }

// NewMemoryStore returns an empty in-memory lease store.
func NewMemoryStore(opts ...MemoryOption) *MemoryStore {
	m := &MemoryStore{now: time.Now, leases: map[string]*memLease{}}
	for _, o := range opts {
		o(m)
	}
	return m
}

func (l *memLease) live(now time.Time) bool { return now.Before(l.expires) }

func (l *memLease) lease(name string) Lease {
	return Lease{Name: name, Holder: l.holder, Token: l.token, Expires: l.expires}
}

// Acquire implements Store.
func (m *MemoryStore) Acquire(ctx context.Context, name, holder string, ttl time.Duration) (Lease, error) {
	if err := ValidateAcquire(name, holder, ttl); err != nil {
		return Lease{}, err
	}
	if err := ctx.Err(); err != nil {
		return Lease{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	cur := m.leases[name]
	if cur == nil {
		cur = &memLease{}
		m.leases[name] = cur
	}
	if cur.live(now) {
		return Lease{}, &HeldError{Current: cur.lease(name), Remaining: cur.expires.Sub(now)}
	}
	cur.holder, cur.token, cur.expires = holder, cur.token+1, now.Add(ttl)
	return cur.lease(name), nil
}

// held returns the stored lease when l is it and it is live, or why not.
func (m *MemoryStore) held(l Lease, now time.Time) (*memLease, string) {
	cur := m.leases[l.Name]
	switch {
	case cur == nil || cur.token < l.Token:
		return nil, "the store never issued this token"
	case cur.token != l.Token:
		return nil, "taken over by a newer lease"
	case cur.holder != l.Holder:
		return nil, "the token belongs to another holder"
	case !cur.live(now):
		return nil, "expired or released"
	}
	return cur, ""
}

// Renew implements Store.
func (m *MemoryStore) Renew(ctx context.Context, l Lease, ttl time.Duration) (Lease, error) {
	if err := ValidateLease(l); err != nil {
		return Lease{}, err
	}
	if err := ValidateTTL(ttl); err != nil {
		return Lease{}, err
	}
	if err := ctx.Err(); err != nil {
		return Lease{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	cur, why := m.held(l, now)
	if cur == nil {
		return Lease{}, Lost(l, why)
	}
	cur.expires = now.Add(ttl)
	return cur.lease(l.Name), nil
}

// Release implements Store.
func (m *MemoryStore) Release(ctx context.Context, l Lease) error {
	if err := ValidateLease(l); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, why := m.held(l, m.now())
	if cur == nil {
		return Lost(l, why)
	}
	cur.expires = time.Time{}
	return nil
}

// Current implements Store.
func (m *MemoryStore) Current(ctx context.Context, name string) (Lease, bool, error) {
	if err := ValidateName(name); err != nil {
		return Lease{}, false, err
	}
	if err := ctx.Err(); err != nil {
		return Lease{}, false, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	cur := m.leases[name]
	if cur == nil || !cur.live(m.now()) {
		return Lease{}, false, nil
	}
	return cur.lease(name), true, nil
}

// Guard runs write, a guarded write of an in-process resource, when l is
// the live lease of its name, and keeps every acquisition, renewal and
// release of the store waiting until write returns: no takeover can come
// between the check and the write. It returns write's error, or an error
// matching ErrFenced (and ErrLost) without calling write when l is not
// live. Keep write short: it holds up every lease of the store.
func (m *MemoryStore) Guard(ctx context.Context, l Lease, write func() error) error {
	if err := ValidateLease(l); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if cur, why := m.held(l, m.now()); cur == nil {
		return Fenced(l, why)
	}
	return write()
}
