//go:build linux

package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eskit/eskit/internal/childtest"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/internal/require"

	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/eventstore/pgstore/pgtest"
	"github.com/eskit/eskit/lease"
)

// freezeChildEnv names the database a re-executed test binary holds the
// lease on; its presence makes TestLeaseFreezeFencing the child.
const freezeChildEnv = "ESKIT_LEASE_FREEZE_CHILD_DB"

const freezeTTL = 1500 * time.Millisecond

// A real process holds the lease through a Keeper and writes under it;
// it is frozen with SIGSTOP; a standby takes over within the TTL with a
// greater token; on SIGCONT the woken process finds its lease gone before
// it writes again, and a guarded write with its old token is refused.
// Nothing it writes after the takeover is accepted.
func TestLeaseFreezeFencing(t *testing.T) {
	if url := os.Getenv(freezeChildEnv); url != "" {
		freezeChild(t, url)
		return
	}
	ctx := t.Context()
	url := pgtest.Database(t)
	pool := pgtest.PoolFor(t, url)
	require.NoError(t, pgstore.Migrate(ctx, pool, "eskit"))
	_, err := pool.Exec(ctx, `CREATE TABLE app_writes (token bigint NOT NULL, n int NOT NULL)`)
	require.NoError(t, err)
	leases := pgstore.NewLeases(pool, "eskit")

	child := childtest.Start(t, "TestLeaseFreezeFencing", "LEASE", freezeChildEnv+"="+url)
	pid := child.PID()
	next := child.Next
	var childToken uint64
	_, err = fmt.Sscanf(next("held", 60*time.Second), "held %d", &childToken)
	require.NoError(t, err)
	next("wrote", 10*time.Second)

	// A standby in this process waits while the child renews.
	k, err := lease.NewKeeper(leases, "freeze", lease.WithTTL(freezeTTL), lease.WithHolder("standby"),
		lease.WithLogger(slog.New(slog.DiscardHandler)))
	require.NoError(t, err)
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

	require.NoError(t, syscall.Kill(-pid, syscall.SIGSTOP))
	stopped := time.Now()
	var h *lease.Held
	select {
	case h = <-took:
	case <-time.After(freezeTTL + 5*time.Second):
		t.Fatalf("no takeover within %s of freezing the holder", freezeTTL+5*time.Second)
	}
	require.NotNil(t, h)
	after := time.Since(stopped)
	t.Logf("the standby took over %s after SIGSTOP (ttl %s), token %d (the frozen holder's: %d)", after, freezeTTL, h.Token(), childToken)
	require.True(t, after < freezeTTL+time.Second, "takeover after %s, want within the ttl of %s (+1s)", after, freezeTTL)
	require.True(t, h.Token() > childToken)
	frozenWrites := countWrites(t, pool, childToken)
	require.True(t, frozenWrites > 0)
	require.NoError(t, guardedWrite(ctx, leases, pool, h.Lease(), 1))

	time.Sleep(200 * time.Millisecond)
	require.NoError(t, syscall.Kill(-pid, syscall.SIGCONT))
	woke := next("woke", 10*time.Second)
	require.True(t, strings.Contains(woke, "lost=true"), "the woken holder did not know its lease was gone: %s", woke)
	stop := next("stopped", 10*time.Second)
	require.True(t, strings.Contains(stop, "lost=true"), stop)
	stale := next("stale-write", 10*time.Second)
	require.True(t, strings.Contains(stale, "fenced=true"), "the deposed holder's write was not refused: %s", stale)
	require.NoError(t, child.Wait(20*time.Second))
	// Nothing the deposed holder wrote after the takeover was accepted.
	require.Equal(t, frozenWrites, countWrites(t, pool, childToken))
	require.Equal(t, 1, countWrites(t, pool, h.Token()))
	require.NoError(t, h.Release(ctx))
}

// freezeChild holds the lease "freeze" and writes under it every few
// milliseconds, reporting on stdout, until its lease is gone; then it
// tries one more write with its old token and reports whether it was
// refused.
func freezeChild(t *testing.T, url string) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	leases := pgstore.NewLeases(pool, "eskit")
	k, err := lease.NewKeeper(leases, "freeze", lease.WithTTL(freezeTTL), lease.WithHolder("child"),
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
			werr := guardedWrite(ctx, leases, pool, h.Lease(), -1)
			fmt.Printf("LEASE stale-write fenced=%v (%v)\n", errors.Is(werr, lease.ErrFenced), werr)
			_ = h.Release(ctx)
			return
		}
		if err := guardedWrite(ctx, leases, pool, h.Lease(), n); err != nil {
			fmt.Printf("LEASE write failed: %v\n", err)
		} else if n == 1 {
			fmt.Printf("LEASE wrote\n")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
