package commandbus

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/internal/values"
)

// IdempotencyStore records the outcome of commands by command ID, so that a
// command dispatched again is answered with its first outcome instead of
// running twice.
type IdempotencyStore interface {
	// Claim reserves key for one execution.
	//
	// When the caller is to execute the command, Claim returns a Lease,
	// which the caller must Complete (success) or Release (failure). When
	// the command already completed, it returns a nil Lease and the recorded
	// Result. While another execution holds the key, Claim waits until that
	// execution completes (and returns its Result) or releases the key (and
	// claims it), or until ctx ends.
	Claim(ctx context.Context, key string) (Lease, Result, error)
}

// Lease is a claim on a command ID, held while the command executes.
type Lease interface {
	// Complete records the command's result; later claims of the key are
	// answered with it until it expires.
	Complete(ctx context.Context, res Result) error
	// Release gives the key up without a result (the command failed), so
	// that the command can be executed again.
	Release(ctx context.Context) error
}

// IdempotencyOption configures the Idempotency middleware.
type IdempotencyOption func(*idempotencyConfig)

type idempotencyConfig struct {
	logger  *slog.Logger
	timeout time.Duration
}

// IdempotencyLogger sets the logger for failures to record an outcome
// (slog.Default() otherwise).
func IdempotencyLogger(l *slog.Logger) IdempotencyOption {
	return func(c *idempotencyConfig) { c.logger = l }
}

// Idempotency runs each command ID at most once at a time and answers a
// command whose ID already completed with its recorded Result, marked
// Duplicate, without running the handler. Concurrent dispatches of the same
// ID wait for the first one. A failed command is not recorded: it can be
// dispatched again. Commands without an ID (see CommandIDOf) pass through.
//
// An error from the store's Claim fails the command (nothing ran). A failure
// to record a successful outcome is logged and the outcome returned: the
// command did run, and a retry is still recognised by the event store
// through the event IDs derived from the command ID.
func Idempotency(store IdempotencyStore, opts ...IdempotencyOption) Middleware {
	cfg := idempotencyConfig{timeout: 5 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	return func(next Handler) Handler {
		return func(ctx context.Context, cmd any) (res Result, err error) {
			id, ok := CommandIDOf(ctx, cmd)
			if !ok {
				return next(ctx, cmd)
			}
			// The key covers the command itself too: another command
			// reusing the ID is not answered with the first one's result
			// but reaches the handler, whose store or repository refuses
			// the reused ID (aggregate.CommandIDReusedError).
			key := id.String()
			if d := aggregate.CommandDigest(cmd); d != "" {
				key += ":" + d
			}
			lease, prev, err := store.Claim(ctx, key)
			if err != nil {
				return Result{}, &idempotencyError{command: values.TypeName(cmd), key: key, err: err}
			}
			if lease == nil {
				prev.Duplicate = true
				return prev, nil
			}
			// Record the outcome even when ctx has ended (a timed-out
			// command must still release its key), within a bound.
			finish := func(f func(context.Context) error, what string) {
				fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.timeout)
				defer cancel()
				if ferr := f(fctx); ferr != nil {
					l := cfg.logger
					if l == nil {
						l = slog.Default()
					}
					l.LogAttrs(ctx, slog.LevelError, "commandbus: idempotency store: "+what,
						slog.String("command", values.TypeName(cmd)), slog.String("command_id", key), slog.Any("error", ferr))
				}
			}
			done := false
			defer func() {
				if !done { // next panicked
					finish(lease.Release, "release failed")
				}
			}()
			res, err = next(ctx, cmd)
			done = true
			if err != nil {
				finish(lease.Release, "release failed")
				return res, err
			}
			finish(func(c context.Context) error { return lease.Complete(c, res) }, "recording the result failed")
			return res, nil
		}
	}
}

type idempotencyError struct {
	command, key string
	err          error
}

func (e *idempotencyError) Error() string {
	return "commandbus: " + e.command + ": idempotency store: claim " + e.key + ": " + e.err.Error()
}

func (e *idempotencyError) Unwrap() error { return e.err }

// MemoryStore is an in-process IdempotencyStore whose results expire after a
// TTL. It suits a single process; use RedisStore to share outcomes between
// processes.
type MemoryStore struct {
	ttl time.Duration
	now func() time.Time

	mu        sync.Mutex
	entries   map[string]*memEntry
	lastSweep time.Time
}

type memEntry struct {
	done      chan struct{} // closed when completed or released
	finished  bool
	completed bool
	result    Result
	expires   time.Time
}

// NewMemoryStore returns a MemoryStore that keeps results for ttl (24 hours
// when ttl <= 0).
func NewMemoryStore(ttl time.Duration) *MemoryStore {
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	return &MemoryStore{ttl: ttl, now: time.Now, entries: make(map[string]*memEntry)}
}

// Claim implements IdempotencyStore.
func (m *MemoryStore) Claim(ctx context.Context, key string) (Lease, Result, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, Result{}, err
		}
		m.mu.Lock()
		now := m.now()
		m.sweep(now)
		e, ok := m.entries[key]
		if ok && e.completed && now.Before(e.expires) {
			m.mu.Unlock()
			return nil, e.result, nil
		}
		if ok && !e.completed {
			wait := e.done
			m.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, Result{}, ctx.Err()
			}
		}
		e = &memEntry{done: make(chan struct{})}
		m.entries[key] = e
		m.mu.Unlock()
		return &memLease{m: m, key: key, e: e}, Result{}, nil
	}
}

// Len returns the number of keys held (running or completed, not yet
// expired or swept).
func (m *MemoryStore) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}

// sweep drops expired results, at most once per TTL. m.mu is held.
func (m *MemoryStore) sweep(now time.Time) {
	if now.Sub(m.lastSweep) < m.ttl {
		return
	}
	m.lastSweep = now
	for k, e := range m.entries {
		if e.completed && !now.Before(e.expires) {
			delete(m.entries, k)
		}
	}
}

type memLease struct {
	m   *MemoryStore
	key string
	e   *memEntry
}

// Complete implements Lease.
func (l *memLease) Complete(_ context.Context, res Result) error {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	if l.e.finished {
		return nil
	}
	l.e.finished = true
	l.e.completed = true
	res.Duplicate = false
	l.e.result = res
	l.e.expires = l.m.now().Add(l.m.ttl)
	close(l.e.done)
	return nil
}

// Release implements Lease.
func (l *memLease) Release(context.Context) error {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	if l.e.finished {
		return nil
	}
	l.e.finished = true
	if l.m.entries[l.key] == l.e {
		delete(l.m.entries, l.key)
	}
	close(l.e.done)
	return nil
}
