package lease_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/eskit/eskit/lease"
	"github.com/eskit/eskit/lease/leasetest"
)

func TestMemoryStore(t *testing.T) {
	leasetest.Run(t, func(t *testing.T) lease.Store { return lease.NewMemoryStore() })
	shared := lease.NewMemoryStore()
	t.Run("Shared", func(t *testing.T) {
		leasetest.Run(t, func(t *testing.T) lease.Store { return shared })
	})
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestMemoryStoreClock(t *testing.T) {
	ctx := t.Context()
	clock := &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	s := lease.NewMemoryStore(lease.WithClock(clock.Now))
	a, err := s.Acquire(ctx, "n", "a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Expires.Equal(clock.Now().Add(time.Minute)) {
		t.Fatalf("expires %v, want a minute after the store's clock", a.Expires)
	}
	clock.Add(59 * time.Second)
	_, err = s.Acquire(ctx, "n", "b", time.Minute)
	var he *lease.HeldError
	if !errors.As(err, &he) || he.Remaining != time.Second {
		t.Fatalf("Acquire a second before expiry: %v, want held for another 1s", err)
	}
	clock.Add(time.Second) // expiry is exclusive: at Expires the lease is gone
	b, err := s.Acquire(ctx, "n", "b", time.Minute)
	if err != nil || b.Token != a.Token+1 {
		t.Fatalf("Acquire at expiry: %+v, %v; want token %d", b, err, a.Token+1)
	}
}

func TestMemoryStoreGuard(t *testing.T) {
	ctx := t.Context()
	clock := &fakeClock{now: time.Unix(1000, 0)}
	s := lease.NewMemoryStore(lease.WithClock(clock.Now))
	a, err := s.Acquire(ctx, "n", "a", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	writes := 0
	if err := s.Guard(ctx, a, func() error { writes++; return nil }); err != nil || writes != 1 {
		t.Fatalf("Guard of the live lease: %v, %d writes", err, writes)
	}
	want := errors.New("boom")
	if err := s.Guard(ctx, a, func() error { return want }); !errors.Is(err, want) {
		t.Fatalf("Guard returns the write's error: %v", err)
	}
	clock.Add(time.Second)
	b, err := s.Acquire(ctx, "n", "b", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Guard(ctx, a, func() error { writes++; return nil })
	if !errors.Is(err, lease.ErrFenced) || !errors.Is(err, lease.ErrLost) || writes != 1 {
		t.Fatalf("Guard of the deposed lease: %v, %d writes; want ErrFenced and no write", err, writes)
	}
	if err := s.Guard(ctx, b, func() error { writes++; return nil }); err != nil || writes != 2 {
		t.Fatalf("Guard of the new lease: %v", err)
	}
	// A takeover waits for a guarded write in flight, even one that
	// outlasts the lease.
	inWrite, finish := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.Guard(ctx, b, func() error { close(inWrite); <-finish; return nil })
	}()
	<-inWrite
	clock.Add(time.Second)
	acquired := make(chan lease.Lease, 1)
	go func() {
		c, err := s.Acquire(ctx, "n", "c", time.Second)
		if err != nil {
			t.Errorf("Acquire: %v", err)
		}
		acquired <- c
	}()
	select {
	case <-acquired:
		t.Fatal("took over during a guarded write")
	case <-time.After(50 * time.Millisecond):
	}
	close(finish)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if c := <-acquired; c.Token != b.Token+1 {
		t.Fatalf("token %d after the write, want %d", c.Token, b.Token+1)
	}
}

func TestFence(t *testing.T) {
	var f lease.Fence
	l := func(tok uint64) lease.Lease { return lease.Lease{Name: "n", Holder: "h", Token: tok} }
	var log []uint64
	write := func(tok uint64) error {
		return f.Write(l(tok), func() error { log = append(log, tok); return nil })
	}
	for _, tok := range []uint64{1, 1, 3} {
		if err := write(tok); err != nil {
			t.Fatalf("write with token %d: %v", tok, err)
		}
	}
	for _, tok := range []uint64{2, 1} {
		err := write(tok)
		if !errors.Is(err, lease.ErrFenced) || !errors.Is(err, lease.ErrLost) {
			t.Fatalf("write with stale token %d: %v, want ErrFenced", tok, err)
		}
	}
	if err := write(3); err != nil {
		t.Fatalf("the current holder writes again: %v", err)
	}
	if f.Highest("n") != 3 || f.Highest("other") != 0 {
		t.Fatalf("highest %d / %d", f.Highest("n"), f.Highest("other"))
	}
	if len(log) != 4 {
		t.Fatalf("writes %v, want the 4 accepted", log)
	}
	// A failed write records nothing.
	boom := errors.New("boom")
	if err := f.Write(l(9), func() error { return boom }); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if f.Highest("n") != 3 {
		t.Fatalf("a failed write moved the fence to %d", f.Highest("n"))
	}
	if err := lease.CheckToken(l(4), 5); !errors.Is(err, lease.ErrFenced) {
		t.Fatalf("CheckToken(4, 5) = %v", err)
	}
	if err := lease.CheckToken(l(5), 5); err != nil {
		t.Fatalf("CheckToken(5, 5) = %v", err)
	}
}
