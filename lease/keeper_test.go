package lease_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eskit/eskit/lease"
)

var quiet = lease.WithLogger(slog.New(slog.DiscardHandler))

// partitioned is a Store whose renewals hang until their context ends
// while cut is set: the holder's network is gone.
type partitioned struct {
	lease.Store
	cut atomic.Bool
}

func (p *partitioned) Renew(ctx context.Context, l lease.Lease, ttl time.Duration) (lease.Lease, error) {
	if p.cut.Load() {
		<-ctx.Done()
		return lease.Lease{}, ctx.Err()
	}
	return p.Store.Renew(ctx, l, ttl)
}

// events records a Keeper's hooks.
type events struct {
	mu          sync.Mutex
	acquired    []lease.Lease
	renewed     int
	renewFailed int
	lost        []error
	released    []error
}

func (e *events) hooks() lease.Hooks {
	return lease.Hooks{
		Acquired:    func(l lease.Lease) { e.mu.Lock(); e.acquired = append(e.acquired, l); e.mu.Unlock() },
		Renewed:     func(lease.Lease) { e.mu.Lock(); e.renewed++; e.mu.Unlock() },
		RenewFailed: func(lease.Lease, error) { e.mu.Lock(); e.renewFailed++; e.mu.Unlock() },
		Lost:        func(_ lease.Lease, err error) { e.mu.Lock(); e.lost = append(e.lost, err); e.mu.Unlock() },
		Released:    func(_ lease.Lease, err error) { e.mu.Lock(); e.released = append(e.released, err); e.mu.Unlock() },
	}
}

// A holder cut off from the store stops at its own deadline: the send time
// of its last successful renewal plus TTL minus the margin, before the
// store lets anyone take over.
func TestKeeperStopsAtItsOwnDeadline(t *testing.T) {
	const ttl, margin = 600 * time.Millisecond, 100 * time.Millisecond
	mem := lease.NewMemoryStore()
	store := &partitioned{Store: mem}
	var ev events
	k, err := lease.NewKeeper(store, "job", lease.WithTTL(ttl), lease.WithSafetyMargin(margin), lease.WithHooks(ev.hooks()), quiet)
	if err != nil {
		t.Fatal(err)
	}
	h, err := k.Hold(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// Let a renewal or two succeed, then cut the network right after one.
	var lastOK time.Time
	for {
		time.Sleep(5 * time.Millisecond)
		ev.mu.Lock()
		n := ev.renewed
		ev.mu.Unlock()
		if n >= 2 {
			store.cut.Store(true)
			lastOK = time.Now()
			break
		}
	}
	deadline := h.Deadline()
	if d := deadline.Sub(lastOK); d > ttl-margin || d < ttl-margin-ttl/3 {
		t.Fatalf("deadline %s after the last renewal, want about ttl − margin = %s", d, ttl-margin)
	}
	select {
	case <-h.Lost():
	case <-time.After(2 * ttl):
		t.Fatal("the held context outlived the holder's deadline")
	}
	ended := time.Now()
	if ended.Before(deadline) {
		t.Fatalf("ended %s before the deadline", deadline.Sub(ended))
	}
	if late := ended.Sub(deadline); late > 100*time.Millisecond {
		t.Fatalf("ended %s after the deadline", late)
	}
	if err := h.Err(); !errors.Is(err, lease.ErrLost) || !errors.Is(context.Cause(h.Context()), lease.ErrLost) {
		t.Fatalf("cause %v, want ErrLost", err)
	}
	// The holder gave up before the store's lease expired (the memory
	// store's clock is this process's, so the two compare here) ...
	if exp := h.Lease().Expires; !ended.Before(exp) {
		t.Fatalf("the holder gave up at %v, after the store's expiry %v", ended, exp)
	}
	// ... and the release on the way out lets the standby in at once.
	if err := h.Release(t.Context()); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if _, ok, _ := mem.Current(t.Context(), "job"); ok {
		t.Fatal("not released")
	}
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if len(ev.acquired) != 1 || len(ev.lost) != 1 || ev.renewFailed == 0 || len(ev.released) != 1 || ev.released[0] != nil {
		t.Fatalf("hooks: %d acquired, %d lost, %d renewals failed, released %v", len(ev.acquired), len(ev.lost), ev.renewFailed, ev.released)
	}
}

// A holder whose lease the store has given to another stops at its next
// renewal.
func TestKeeperLosesToTakeover(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1000, 0)}
	mem := lease.NewMemoryStore(lease.WithClock(clock.Now))
	var ev events
	const ttl = 300 * time.Millisecond
	k, err := lease.NewKeeper(mem, "job", lease.WithTTL(ttl), lease.WithHooks(ev.hooks()), quiet)
	if err != nil {
		t.Fatal(err)
	}
	h, err := k.Hold(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Hour) // the store's clock jumps past the expiry
	b, err := mem.Acquire(t.Context(), "job", "b", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.Lost():
	case <-time.After(ttl):
		t.Fatal("still held after a renewal interval")
	}
	if err := h.Err(); !errors.Is(err, lease.ErrLost) {
		t.Fatalf("cause %v, want ErrLost", err)
	}
	if err := h.Release(t.Context()); !errors.Is(err, lease.ErrLost) {
		t.Fatalf("Release of a lost lease: %v, want ErrLost", err)
	}
	if cur, ok, _ := mem.Current(t.Context(), "job"); !ok || cur.Token != b.Token {
		t.Fatalf("the release touched the new holder's lease: %+v %v", cur, ok)
	}
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if len(ev.lost) != 1 || len(ev.released) != 0 {
		t.Fatalf("hooks: lost %v, released %v", ev.lost, ev.released)
	}
}

// Run keeps exactly one of several Keepers working at a time, hands over
// when the worker's context ends, and every new leader writes with a
// greater token.
func TestKeeperRun(t *testing.T) {
	mem := lease.NewMemoryStore()
	var fence lease.Fence
	var active, maxActive atomic.Int32
	type lead struct {
		keeper int
		token  uint64
	}
	leads := make(chan lead, 100)
	const n = 3
	cancels := make([]context.CancelFunc, n)
	var wg sync.WaitGroup
	for i := range n {
		k, err := lease.NewKeeper(mem, "job", lease.WithTTL(300*time.Millisecond), lease.WithRetryInterval(20*time.Millisecond), quiet)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancels[i] = cancel
		wg.Go(func() {
			err := k.Run(ctx, func(ctx context.Context, h *lease.Held) error {
				if a := active.Add(1); a > maxActive.Load() {
					maxActive.Store(a)
				}
				defer active.Add(-1)
				if err := fence.Write(h.Lease(), func() error { return nil }); err != nil {
					t.Errorf("a new leader was fenced: %v", err)
				}
				leads <- lead{i, h.Token()}
				<-ctx.Done()
				return nil
			})
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	var got []uint64
	seen := map[int]bool{}
	for i := range n {
		select {
		case l := <-leads:
			if seen[l.keeper] {
				t.Fatalf("keeper %d led again after its Run was stopped", l.keeper)
			}
			seen[l.keeper] = true
			got = append(got, l.token)
			// Stop the leader's Run: the next Keeper takes over.
			cancels[l.keeper]()
		case <-time.After(5 * time.Second):
			t.Fatalf("leader %d never came", i+1)
		}
	}
	for _, c := range cancels {
		c()
	}
	wg.Wait()
	if maxActive.Load() != 1 {
		t.Fatalf("%d workers ran at once", maxActive.Load())
	}
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("tokens %v, want increasing", got)
		}
	}
}

func TestNewKeeperRefuses(t *testing.T) {
	mem := lease.NewMemoryStore()
	for _, tc := range []struct {
		name string
		opts []lease.Option
	}{
		{"", nil},
		{"a\x00b", nil},
		{"ok", []lease.Option{lease.WithTTL(time.Second), lease.WithRenewInterval(900 * time.Millisecond), lease.WithSafetyMargin(100 * time.Millisecond)}},
		{"ok", []lease.Option{lease.WithTTL(0)}},
		{"ok", []lease.Option{lease.WithRenewInterval(-time.Second)}},
		{"ok", []lease.Option{lease.WithHolder("h\x00")}},
	} {
		if _, err := lease.NewKeeper(mem, tc.name, tc.opts...); !errors.Is(err, lease.ErrInvalidArgument) {
			t.Errorf("NewKeeper(%q, %d options): %v, want ErrInvalidArgument", tc.name, len(tc.opts), err)
		}
	}
	if _, err := lease.NewKeeper(nil, "ok"); !errors.Is(err, lease.ErrInvalidArgument) {
		t.Errorf("NewKeeper without a store: %v", err)
	}
	k, err := lease.NewKeeper(mem, "ok")
	if err != nil {
		t.Fatal(err)
	}
	if k.TTL() != lease.DefaultTTL || k.Holder() == "" || k.Name() != "ok" {
		t.Fatalf("defaults: ttl %s, holder %q", k.TTL(), k.Holder())
	}
	k2, _ := lease.NewKeeper(mem, "ok")
	if k2.Holder() == k.Holder() {
		t.Fatalf("two Keepers share the holder %q", k.Holder())
	}
}

// TryHold takes a free lease at once, refuses a held one with the holder
// named, and the lease it returns is renewed and released like Hold's.
func TestKeeperTryHold(t *testing.T) {
	mem := lease.NewMemoryStore()
	a, err := lease.NewKeeper(mem, "part-1", lease.WithHolder("a"), lease.WithTTL(300*time.Millisecond), quiet)
	if err != nil {
		t.Fatal(err)
	}
	b, err := lease.NewKeeper(mem, "part-1", lease.WithHolder("b"), lease.WithTTL(300*time.Millisecond), quiet)
	if err != nil {
		t.Fatal(err)
	}
	ha, err := a.TryHold(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var held *lease.HeldError
	if _, err := b.TryHold(t.Context()); !errors.As(err, &held) || held.Current.Holder != "a" {
		t.Fatalf("TryHold of a held lease: %v, want a *HeldError naming a", err)
	}
	// Renewed past its TTL.
	time.Sleep(500 * time.Millisecond)
	if err := ha.Err(); err != nil {
		t.Fatalf("held lease not renewed: %v", err)
	}
	if err := ha.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	hb, err := b.TryHold(t.Context())
	if err != nil {
		t.Fatalf("TryHold after the release: %v", err)
	}
	if hb.Token() <= ha.Token() {
		t.Fatalf("token %d after %d, want greater", hb.Token(), ha.Token())
	}
	_ = hb.Release(t.Context())
}
