// Package leasetest is the conformance suite of lease.Store: an
// implementation's tests call Run with a constructor of stores. It checks
// acquisition, renewal, release and takeover after expiry, that fencing
// tokens strictly increase over every acquisition of a name (across
// releases and expiries), that a deposed holder's renewals and releases
// fail with lease.ErrLost, that exactly one of many concurrent acquirers
// wins, hostile names and holders, cancelled contexts, and a Keeper's
// renewals and failover on the store. It uses TTLs of a fraction of a
// second, so it runs in a few seconds.
package leasetest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eskit/eskit/lease"
)

// TTLs of the suite: long is a lease that must not expire during a test,
// short one that a test waits out.
const (
	long  = 30 * time.Second
	short = 400 * time.Millisecond
)

// Run checks the lease.Store contract on the stores newStore returns. Each
// call may return a fresh store or share one: every test uses lease names
// of its own.
func Run(t *testing.T, newStore func(t *testing.T) lease.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s lease.Store, name string)
	}{
		{"AcquireRenewRelease", testAcquireRenewRelease},
		{"SecondHolderRefused", testSecondHolderRefused},
		{"TakeoverAfterExpiry", testTakeoverAfterExpiry},
		{"RenewAfterExpiryFails", testRenewAfterExpiry},
		{"TokensIncrease", testTokensIncrease},
		{"ForgedLeaseRefused", testForged},
		{"ConcurrentAcquirers", testConcurrentAcquirers},
		{"Current", testCurrent},
		{"HostileNamesAndHolders", testHostile},
		{"InvalidArguments", testInvalid},
		{"CancelledContext", testCancelled},
		{"KeeperRenewsAndReleases", testKeeperRenews},
		{"KeeperFailover", testKeeperFailover},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t), uniqueName(tc.name))
		})
	}
}

// uniqueName returns a lease name no other test (and no earlier run on a
// shared store) uses.
func uniqueName(base string) string {
	return fmt.Sprintf("leasetest/%s/%d", base, time.Now().UnixNano())
}

func acquire(t *testing.T, s lease.Store, name, holder string, ttl time.Duration) lease.Lease {
	t.Helper()
	l, err := s.Acquire(t.Context(), name, holder, ttl)
	if err != nil {
		t.Fatalf("Acquire(%q, %q): %v", name, holder, err)
	}
	if l.Name != name || l.Holder != holder || l.Token == 0 || l.Expires.IsZero() {
		t.Fatalf("Acquire(%q, %q) = %+v: want the name, the holder, a token and an expiry", name, holder, l)
	}
	return l
}

func wantLost(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, lease.ErrLost) {
		t.Fatalf("%s: got %v, want an error matching ErrLost", what, err)
	}
	if errors.Is(err, lease.ErrHeld) {
		t.Fatalf("%s: %v matches ErrHeld too", what, err)
	}
}

func wantHeld(t *testing.T, what string, err error, by lease.Lease, ttl time.Duration) {
	t.Helper()
	var he *lease.HeldError
	if !errors.Is(err, lease.ErrHeld) || !errors.As(err, &he) {
		t.Fatalf("%s: got %v, want a *HeldError", what, err)
	}
	if errors.Is(err, lease.ErrLost) {
		t.Fatalf("%s: %v matches ErrLost too", what, err)
	}
	if he.Current.Name != by.Name || he.Current.Holder != by.Holder || he.Current.Token != by.Token {
		t.Fatalf("%s: held by %+v, want %+v", what, he.Current, by)
	}
	if he.Remaining <= 0 || he.Remaining > ttl {
		t.Fatalf("%s: remaining %s, want within (0, %s]", what, he.Remaining, ttl)
	}
}

func current(t *testing.T, s lease.Store, name string) (lease.Lease, bool) {
	t.Helper()
	l, ok, err := s.Current(t.Context(), name)
	if err != nil {
		t.Fatalf("Current(%q): %v", name, err)
	}
	if ok && l.Name != name {
		t.Fatalf("Current(%q) names %q", name, l.Name)
	}
	return l, ok
}

func wantCurrent(t *testing.T, s lease.Store, want lease.Lease) {
	t.Helper()
	got, ok := current(t, s, want.Name)
	if !ok || got.Holder != want.Holder || got.Token != want.Token {
		t.Fatalf("Current(%q) = %+v, %v; want holder %q, token %d", want.Name, got, ok, want.Holder, want.Token)
	}
}

func wantNoCurrent(t *testing.T, s lease.Store, name string) {
	t.Helper()
	if got, ok := current(t, s, name); ok {
		t.Fatalf("Current(%q) = %+v, want none", name, got)
	}
}

// waitExpired waits until the store no longer shows a live lease of name.
func waitExpired(t *testing.T, s lease.Store, name string, ttl time.Duration) {
	t.Helper()
	deadline := time.Now().Add(ttl + 5*time.Second)
	time.Sleep(ttl)
	for {
		if _, ok := current(t, s, name); !ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease %q still live %s after its ttl of %s", name, 5*time.Second, ttl)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testAcquireRenewRelease(t *testing.T, s lease.Store, name string) {
	ctx := t.Context()
	wantNoCurrent(t, s, name)
	l := acquire(t, s, name, "holder-a", long)
	wantCurrent(t, s, l)

	time.Sleep(5 * time.Millisecond)
	r, err := s.Renew(ctx, l, long)
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if r.Name != l.Name || r.Holder != l.Holder || r.Token != l.Token {
		t.Fatalf("Renew = %+v, want the same name, holder and token as %+v", r, l)
	}
	if !r.Expires.After(l.Expires) {
		t.Fatalf("Renew moved the expiry from %v to %v, want later", l.Expires, r.Expires)
	}
	// A renewal may shorten the lease too: the TTL counts from now.
	r2, err := s.Renew(ctx, r, 10*time.Second)
	if err != nil {
		t.Fatalf("Renew with a shorter ttl: %v", err)
	}
	if !r2.Expires.Before(r.Expires) {
		t.Fatalf("Renew for 10s moved the expiry from %v to %v, want earlier", r.Expires, r2.Expires)
	}
	wantCurrent(t, s, r2)

	if err := s.Release(ctx, r2); err != nil {
		t.Fatalf("Release: %v", err)
	}
	wantNoCurrent(t, s, name)
	wantLost(t, "Release twice", s.Release(ctx, r2))
	_, err = s.Renew(ctx, r2, long)
	wantLost(t, "Renew after Release", err)
	wantNoCurrent(t, s, name)

	// Released, the lease goes to the next holder at once, with a greater token.
	b := acquire(t, s, name, "holder-b", long)
	if b.Token <= l.Token {
		t.Fatalf("token after release %d, want more than %d", b.Token, l.Token)
	}
	wantCurrent(t, s, b)
}

func testSecondHolderRefused(t *testing.T, s lease.Store, name string) {
	ctx := t.Context()
	a := acquire(t, s, name, "holder-a", long)
	_, err := s.Acquire(ctx, name, "holder-b", long)
	wantHeld(t, "Acquire by a second holder", err, a, long)
	// The holder itself is refused too: one holder value is one worker.
	_, err = s.Acquire(ctx, name, "holder-a", long)
	wantHeld(t, "Acquire by the holder again", err, a, long)
	// The refusals changed nothing.
	wantCurrent(t, s, a)
	if _, err := s.Renew(ctx, a, long); err != nil {
		t.Fatalf("Renew after the refusals: %v", err)
	}
	// Other names are independent.
	o := acquire(t, s, name+"/other", "holder-b", long)
	if o.Token == 0 {
		t.Fatal("no token")
	}
	wantCurrent(t, s, a)
}

func testTakeoverAfterExpiry(t *testing.T, s lease.Store, name string) {
	ctx := t.Context()
	a := acquire(t, s, name, "holder-a", short)
	_, err := s.Acquire(ctx, name, "holder-b", short)
	wantHeld(t, "Acquire while live", err, a, short)
	waitExpired(t, s, name, short)

	b := acquire(t, s, name, "holder-b", long)
	if b.Token <= a.Token {
		t.Fatalf("takeover token %d, want more than the expired %d", b.Token, a.Token)
	}
	wantCurrent(t, s, b)
	// The deposed holder can neither renew nor release.
	_, err = s.Renew(ctx, a, long)
	wantLost(t, "Renew by the deposed holder", err)
	wantLost(t, "Release by the deposed holder", s.Release(ctx, a))
	wantCurrent(t, s, b)
	_, err = s.Acquire(ctx, name, "holder-a", long)
	wantHeld(t, "Acquire by the deposed holder", err, b, long)
}

func testRenewAfterExpiry(t *testing.T, s lease.Store, name string) {
	ctx := t.Context()
	a := acquire(t, s, name, "holder-a", short)
	waitExpired(t, s, name, short)
	// Nobody took it over, but an expired lease is gone: no resurrection.
	_, err := s.Renew(ctx, a, long)
	wantLost(t, "Renew after expiry", err)
	wantNoCurrent(t, s, name)
	wantLost(t, "Release after expiry", s.Release(ctx, a))
	a2 := acquire(t, s, name, "holder-a", long)
	if a2.Token <= a.Token {
		t.Fatalf("token after expiry %d, want more than %d", a2.Token, a.Token)
	}
}

func testTokensIncrease(t *testing.T, s lease.Store, name string) {
	ctx := t.Context()
	seen := map[uint64]bool{}
	var last uint64
	next := func(l lease.Lease, how string) {
		t.Helper()
		if l.Token <= last || seen[l.Token] {
			t.Fatalf("%s: token %d after %d, want strictly more", how, l.Token, last)
		}
		seen[l.Token] = true
		last = l.Token
	}
	for i := range 4 {
		holder := fmt.Sprintf("holder-%d", i%2)
		l := acquire(t, s, name, holder, long)
		next(l, "acquire after release")
		// Renewals keep the token.
		r, err := s.Renew(ctx, l, long)
		if err != nil || r.Token != l.Token {
			t.Fatalf("Renew = %+v, %v; want token %d", r, err, l.Token)
		}
		if err := s.Release(ctx, r); err != nil {
			t.Fatalf("Release: %v", err)
		}
	}
	for range 2 {
		l := acquire(t, s, name, "holder-x", short)
		next(l, "acquire after expiry")
		waitExpired(t, s, name, short)
	}
	l := acquire(t, s, name, "holder-y", long)
	next(l, "acquire after expiry")
	// Another name's tokens do not move this one's.
	for range 3 {
		o := acquire(t, s, name+"/other", "holder-z", long)
		if err := s.Release(ctx, o); err != nil {
			t.Fatalf("Release: %v", err)
		}
	}
	if err := s.Release(ctx, l); err != nil {
		t.Fatalf("Release: %v", err)
	}
	next(acquire(t, s, name, "holder-y", long), "acquire after another name's acquisitions")
}

func testForged(t *testing.T, s lease.Store, name string) {
	ctx := t.Context()
	a := acquire(t, s, name, "holder-a", long)
	forged := []struct {
		what string
		l    lease.Lease
	}{
		{"another holder with the token", lease.Lease{Name: name, Holder: "holder-b", Token: a.Token}},
		{"a token never issued", lease.Lease{Name: name, Holder: "holder-a", Token: a.Token + 1}},
		{"an older token", lease.Lease{Name: name, Holder: "holder-a", Token: a.Token - 1}},
		{"another name", lease.Lease{Name: name + "/x", Holder: "holder-a", Token: a.Token}},
	}
	for _, f := range forged {
		if f.l.Token == 0 {
			continue // a's token is 1: there is no older one
		}
		_, err := s.Renew(ctx, f.l, long)
		wantLost(t, "Renew of "+f.what, err)
		wantLost(t, "Release of "+f.what, s.Release(ctx, f.l))
	}
	wantCurrent(t, s, a)
}

func testConcurrentAcquirers(t *testing.T, s lease.Store, name string) {
	ctx := t.Context()
	const n = 12
	var last uint64
	for round := range 3 {
		var wg sync.WaitGroup
		start := make(chan struct{})
		leases := make([]lease.Lease, n)
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				<-start
				leases[i], errs[i] = s.Acquire(ctx, name, fmt.Sprintf("holder-%d-%d", round, i), long)
			})
		}
		close(start)
		wg.Wait()
		var won []lease.Lease
		for i, err := range errs {
			switch {
			case err == nil:
				won = append(won, leases[i])
			case !errors.Is(err, lease.ErrHeld):
				t.Fatalf("round %d: acquirer %d: %v, want success or ErrHeld", round, i, err)
			}
		}
		if len(won) != 1 {
			t.Fatalf("round %d: %d acquirers won (%+v), want exactly one", round, len(won), won)
		}
		w := won[0]
		if w.Token <= last {
			t.Fatalf("round %d: token %d, want more than %d", round, w.Token, last)
		}
		last = w.Token
		for i, err := range errs {
			if err != nil {
				wantHeld(t, fmt.Sprintf("round %d: acquirer %d", round, i), err, w, long)
			}
		}
		wantCurrent(t, s, w)
		if err := s.Release(ctx, w); err != nil {
			t.Fatalf("round %d: Release: %v", round, err)
		}
	}
}

func testCurrent(t *testing.T, s lease.Store, name string) {
	wantNoCurrent(t, s, name)
	a := acquire(t, s, name, "holder-a", short)
	got, ok := current(t, s, name)
	if !ok || got.Holder != a.Holder || got.Token != a.Token || !got.Expires.Equal(a.Expires) {
		t.Fatalf("Current = %+v, %v; want %+v", got, ok, a)
	}
	waitExpired(t, s, name, short)
	wantNoCurrent(t, s, name)
	wantNoCurrent(t, s, name+"/never")
}

func testHostile(t *testing.T, s lease.Store, name string) {
	ctx := t.Context()
	// A name of exactly MaxNameLength bytes, mostly 2-byte runes.
	fill := lease.MaxNameLength - len(name) - 1
	longest := strings.Repeat("ü", fill/2) + strings.Repeat("x", fill%2) + "/" + name
	names := []string{
		name + ":a", name + ":a:b", name + "{x}", name + "%7Bx%7D", name + "{", name + "}",
		"}" + name, "{" + name + "}", name + " with spaces\tand\nnewlines", name + "/ünïcødé/🚀/日本",
		name + `'"; DROP TABLE leases; --`, name + "*?[]", name + `\`, name + "%", name + "%25",
		longest,
	}
	holders := []string{"h:1", "{h}", "🚀 holder", strings.Repeat("h", lease.MaxHolderLength), "h%7B"}
	if len(longest) != lease.MaxNameLength {
		t.Fatalf("test bug: the longest name has %d bytes", len(longest))
	}
	held := make([]lease.Lease, len(names))
	for i, n := range names {
		held[i] = acquire(t, s, n, holders[i%len(holders)], long)
	}
	// Every name is a lease of its own: none of them collided.
	for i, l := range held {
		wantCurrent(t, s, l)
		r, err := s.Renew(ctx, l, long)
		if err != nil || r.Name != names[i] || r.Holder != l.Holder || r.Token != l.Token {
			t.Fatalf("Renew(%q) = %+v, %v", names[i], r, err)
		}
	}
	for i, l := range held {
		if err := s.Release(ctx, l); err != nil {
			t.Fatalf("Release(%q): %v", names[i], err)
		}
		wantNoCurrent(t, s, names[i])
		for _, other := range held[i+1:] {
			wantCurrent(t, s, other)
		}
	}
}

func testInvalid(t *testing.T, s lease.Store, name string) {
	ctx := t.Context()
	bad := []struct{ what, name, holder string }{
		{"empty name", "", "h"},
		{"empty holder", name, ""},
		{"NUL in the name", name + "\x00x", "h"},
		{"NUL in the holder", name, "h\x00"},
		{"invalid UTF-8 name", name + "\xff", "h"},
		{"invalid UTF-8 holder", name, "h\xc3"},
		{"name too long", strings.Repeat("n", lease.MaxNameLength+1), "h"},
		{"holder too long", name, strings.Repeat("h", lease.MaxHolderLength+1)},
	}
	for _, b := range bad {
		_, err := s.Acquire(ctx, b.name, b.holder, long)
		if !errors.Is(err, lease.ErrInvalidArgument) {
			t.Fatalf("Acquire with %s: got %v, want ErrInvalidArgument", b.what, err)
		}
		_, err = s.Renew(ctx, lease.Lease{Name: b.name, Holder: b.holder, Token: 1}, long)
		if !errors.Is(err, lease.ErrInvalidArgument) {
			t.Fatalf("Renew with %s: got %v, want ErrInvalidArgument", b.what, err)
		}
		if err := s.Release(ctx, lease.Lease{Name: b.name, Holder: b.holder, Token: 1}); !errors.Is(err, lease.ErrInvalidArgument) {
			t.Fatalf("Release with %s: got %v, want ErrInvalidArgument", b.what, err)
		}
		if b.holder == "h" {
			if _, _, err := s.Current(ctx, b.name); !errors.Is(err, lease.ErrInvalidArgument) {
				t.Fatalf("Current with %s: got %v, want ErrInvalidArgument", b.what, err)
			}
		}
	}
	if err := lease.ValidateName(name + "\x00"); err == nil || !strings.Contains(err.Error(), "NUL") {
		t.Fatalf("the error of a NUL in a name should say so: %v", err)
	}
	for _, ttl := range []time.Duration{0, -time.Second, lease.MinTTL - 1, lease.MaxTTL + 1} {
		if _, err := s.Acquire(ctx, name, "h", ttl); !errors.Is(err, lease.ErrInvalidArgument) {
			t.Fatalf("Acquire for %s: got %v, want ErrInvalidArgument", ttl, err)
		}
	}
	wantNoCurrent(t, s, name)
	a := acquire(t, s, name, "h", long)
	if _, err := s.Renew(ctx, a, 0); !errors.Is(err, lease.ErrInvalidArgument) {
		t.Fatalf("Renew for 0: got %v, want ErrInvalidArgument", err)
	}
	if _, err := s.Renew(ctx, lease.Lease{Name: name, Holder: "h"}, long); !errors.Is(err, lease.ErrInvalidArgument) {
		t.Fatalf("Renew without a token: got %v, want ErrInvalidArgument", err)
	}
	wantCurrent(t, s, a)
}

func testCancelled(t *testing.T, s lease.Store, name string) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Acquire(ctx, name, "h", long); !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire on a cancelled context: got %v, want context.Canceled", err)
	}
	if _, _, err := s.Current(ctx, name); !errors.Is(err, context.Canceled) {
		t.Fatalf("Current on a cancelled context: got %v, want context.Canceled", err)
	}
	wantNoCurrent(t, s, name)
	a := acquire(t, s, name, "h", long)
	if _, err := s.Renew(ctx, a, long); !errors.Is(err, context.Canceled) {
		t.Fatalf("Renew on a cancelled context: got %v, want context.Canceled", err)
	}
	if err := s.Release(ctx, a); !errors.Is(err, context.Canceled) {
		t.Fatalf("Release on a cancelled context: got %v, want context.Canceled", err)
	}
	// Nothing happened: the lease is still held.
	wantCurrent(t, s, a)
	dctx, dcancel := context.WithTimeout(t.Context(), time.Nanosecond)
	defer dcancel()
	<-dctx.Done()
	if _, err := s.Acquire(dctx, name+"/d", "h", long); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire past the deadline: got %v, want context.DeadlineExceeded", err)
	}
}

// keeper returns a Keeper of name on s with a short TTL.
func keeper(t *testing.T, s lease.Store, name, holder string, ttl time.Duration, hooks lease.Hooks) *lease.Keeper {
	t.Helper()
	k, err := lease.NewKeeper(s, name, lease.WithTTL(ttl), lease.WithHolder(holder), lease.WithHooks(hooks),
		lease.WithLogger(slog.New(slog.DiscardHandler)),
		lease.WithRetryInterval(ttl/10))
	if err != nil {
		t.Fatalf("NewKeeper: %v", err)
	}
	return k
}

func testKeeperRenews(t *testing.T, s lease.Store, name string) {
	const ttl = 600 * time.Millisecond
	var mu sync.Mutex
	renewed := 0
	k := keeper(t, s, name, "keeper-a", ttl, lease.Hooks{Renewed: func(lease.Lease) { mu.Lock(); renewed++; mu.Unlock() }})
	h, err := k.Hold(t.Context())
	if err != nil {
		t.Fatalf("Hold: %v", err)
	}
	first := h.Lease()
	wantCurrent(t, s, first)
	// Held for several TTLs: the renewals keep it, with its token.
	time.Sleep(3 * ttl)
	if err := h.Err(); err != nil {
		t.Fatalf("held lease lost while renewed: %v", err)
	}
	if h.Context().Err() != nil {
		t.Fatal("held context ended while renewed")
	}
	if h.Token() != first.Token {
		t.Fatalf("token moved from %d to %d on renewals", first.Token, h.Token())
	}
	mu.Lock()
	n := renewed
	mu.Unlock()
	if n < 5 {
		t.Fatalf("%d renewals in 3 ttls, want at least 5 (every ttl/3)", n)
	}
	wantCurrent(t, s, first)
	if err := h.Release(t.Context()); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if h.Context().Err() == nil || h.Err() == nil {
		t.Fatal("held context alive after Release")
	}
	if errors.Is(h.Err(), lease.ErrLost) {
		t.Fatalf("a released lease reports %v, not lost", h.Err())
	}
	wantNoCurrent(t, s, name)
}

func testKeeperFailover(t *testing.T, s lease.Store, name string) {
	const ttl = 600 * time.Millisecond
	ka := keeper(t, s, name, "keeper-a", ttl, lease.Hooks{})
	kb := keeper(t, s, name, "keeper-b", ttl, lease.Hooks{})
	ha, err := ka.Hold(t.Context())
	if err != nil {
		t.Fatalf("Hold a: %v", err)
	}
	got := make(chan *lease.Held, 1)
	bctx, bcancel := context.WithCancel(t.Context())
	defer bcancel()
	go func() {
		h, err := kb.Hold(bctx)
		if err != nil {
			t.Errorf("Hold b: %v", err)
			close(got)
			return
		}
		got <- h
	}()
	// b stands by while a holds (and renews past the TTL).
	select {
	case h := <-got:
		t.Fatalf("b acquired %+v while a held the lease", h.Lease())
	case <-time.After(2 * ttl):
	}
	wantCurrent(t, s, ha.Lease())
	released := time.Now()
	if err := ha.Release(t.Context()); err != nil {
		t.Fatalf("Release a: %v", err)
	}
	var hb *lease.Held
	select {
	case hb = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("b did not take over within 5s of a's release")
	}
	if hb == nil {
		return
	}
	if d := time.Since(released); d > ttl {
		t.Fatalf("b took over %s after the release, want within the standby interval (ttl/10)", d)
	}
	if hb.Token() <= ha.Token() {
		t.Fatalf("b's token %d, want more than a's %d", hb.Token(), ha.Token())
	}
	wantCurrent(t, s, hb.Lease())
	// Ending the Keeper's context releases the lease.
	bcancel()
	select {
	case <-hb.Context().Done():
	case <-time.After(time.Second):
		t.Fatal("b's held context outlived the Keeper's")
	}
	if err := hb.Release(t.Context()); err != nil {
		t.Fatalf("Release after the context ended: %v", err)
	}
	wantNoCurrent(t, s, name)
}
