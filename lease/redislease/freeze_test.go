//go:build linux

package redislease_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eskit/eskit/internal/childtest"

	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/lease"
	"github.com/eskit/eskit/lease/redislease"
)

// freezeChildEnv carries the key prefix a re-executed test binary holds
// the lease under; its presence makes TestLeaseFreezeFencing the child.
const freezeChildEnv = "ESKIT_REDISLEASE_FREEZE_CHILD_PREFIX"

const freezeTTL = 1500 * time.Millisecond

// writes is the guarded resource: a list of the tokens of accepted writes.
func writesKey(s *redislease.Store) string {
	return s.Prefix() + "writes:" + redislease.HashTag("freeze")
}

const writeLua = `return redis.call('RPUSH', KEYS[1], ARGV[1])`

func countWrites(t *testing.T, rdb redis.UniversalClient, s *redislease.Store, token uint64) int {
	t.Helper()
	all, err := rdb.LRange(t.Context(), writesKey(s), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, tok := range all {
		if tok == strconv.FormatUint(token, 10) {
			n++
		}
	}
	return n
}

// A real process holds the lease through a Keeper and writes under it
// (guarded scripts); it is frozen with SIGSTOP; a standby takes over within
// the TTL with a greater token; on SIGCONT the woken process finds its
// lease gone before it writes again, and a guarded write with its old token
// is refused. Nothing it writes after the takeover is accepted.
func TestLeaseFreezeFencing(t *testing.T) {
	if prefix := os.Getenv(freezeChildEnv); prefix != "" {
		freezeChild(t, prefix)
		return
	}
	ctx := t.Context()
	rdb, prefix := testsvc.Redis(t)
	s := newStore(t, rdb, prefix)
	write := s.Guard(writeLua)

	child := childtest.Start(t, "TestLeaseFreezeFencing", "LEASE", freezeChildEnv+"="+prefix)
	pid := child.PID()
	next := child.Next
	var childToken uint64
	if _, err := fmt.Sscanf(next("held", 60*time.Second), "held %d", &childToken); err != nil {
		t.Fatal(err)
	}
	next("wrote", 10*time.Second)

	k, err := lease.NewKeeper(s, "freeze", lease.WithTTL(freezeTTL), lease.WithHolder("standby"),
		lease.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	took := make(chan *lease.Held, 1)
	go func() {
		h, err := k.Hold(ctx)
		if err != nil {
			t.Errorf("standby Hold: %v", err)
			close(took)
			return
		}
		took <- h
	}()
	select {
	case h := <-took:
		t.Fatalf("the standby took %v while the child held and renewed it", h.Lease())
	case <-time.After(2 * freezeTTL):
	}

	if err := syscall.Kill(-pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	var h *lease.Held
	select {
	case h = <-took:
	case <-time.After(freezeTTL + 5*time.Second):
		t.Fatalf("no takeover within %s of freezing the holder", freezeTTL+5*time.Second)
	}
	if h == nil {
		t.FailNow()
	}
	after := time.Since(stopped)
	t.Logf("the standby took over %s after SIGSTOP (ttl %s), token %d (the frozen holder's: %d)", after, freezeTTL, h.Token(), childToken)
	if after >= freezeTTL+time.Second {
		t.Fatalf("takeover after %s, want within the ttl of %s (+1s)", after, freezeTTL)
	}
	if h.Token() <= childToken {
		t.Fatalf("standby token %d, want more than %d", h.Token(), childToken)
	}
	frozenWrites := countWrites(t, rdb, s, childToken)
	if frozenWrites == 0 {
		t.Fatal("the child wrote nothing")
	}
	if err := write.Run(ctx, h.Lease(), []string{writesKey(s)}, strconv.FormatUint(h.Token(), 10)).Err(); err != nil {
		t.Fatalf("the new holder's write: %v", err)
	}

	time.Sleep(200 * time.Millisecond)
	if err := syscall.Kill(-pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if woke := next("woke", 10*time.Second); !strings.Contains(woke, "lost=true") {
		t.Fatalf("the woken holder did not know its lease was gone: %s", woke)
	}
	if stop := next("stopped", 10*time.Second); !strings.Contains(stop, "lost=true") {
		t.Fatal(stop)
	}
	if stale := next("stale-write", 10*time.Second); !strings.Contains(stale, "fenced=true") {
		t.Fatalf("the deposed holder's write was not refused: %s", stale)
	}
	if err := child.Wait(20 * time.Second); err != nil {
		t.Fatalf("child: %v", err)
	}
	if n := countWrites(t, rdb, s, childToken); n != frozenWrites {
		t.Fatalf("the deposed holder had %d writes at the takeover and %d at the end", frozenWrites, n)
	}
	if n := countWrites(t, rdb, s, h.Token()); n != 1 {
		t.Fatalf("%d writes of the new holder, want 1", n)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// freezeChild holds the lease "freeze" and writes under it every few
// milliseconds, reporting on stdout, until its lease is gone; then it
// tries one more write with its old token and reports whether it was
// refused.
func freezeChild(t *testing.T, prefix string) {
	ctx := context.Background()
	opt, err := redis.ParseURL(testsvc.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	s := newStore(t, rdb, prefix)
	write := s.Guard(writeLua)
	guarded := func(l lease.Lease) error {
		return write.Run(ctx, l, []string{writesKey(s)}, strconv.FormatUint(l.Token, 10)).Err()
	}
	k, err := lease.NewKeeper(s, "freeze", lease.WithTTL(freezeTTL), lease.WithHolder("child"),
		lease.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, nil))))
	if err != nil {
		t.Fatal(err)
	}
	h, err := k.Hold(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("LEASE held %d\n", h.Token())
	last := time.Now()
	for n := 1; ; n++ {
		// The gap since the last iteration began, so that a freeze in the
		// middle of a write counts too.
		gap := time.Since(last)
		last = time.Now()
		err := h.Err() // before anything else: the lease may be gone
		if gap > freezeTTL/2 {
			fmt.Printf("LEASE woke after %s lost=%v (%v)\n", gap.Round(time.Millisecond), errors.Is(err, lease.ErrLost), err)
		}
		if err != nil {
			fmt.Printf("LEASE stopped token %d lost=%v ctx-done=%v\n", h.Token(), errors.Is(err, lease.ErrLost), h.Context().Err() != nil)
			werr := guarded(h.Lease())
			fmt.Printf("LEASE stale-write fenced=%v (%v)\n", errors.Is(werr, lease.ErrFenced), werr)
			_ = h.Release(ctx)
			return
		}
		if err := guarded(h.Lease()); err != nil {
			fmt.Printf("LEASE write failed: %v\n", err)
		} else if n == 1 {
			fmt.Printf("LEASE wrote\n")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
