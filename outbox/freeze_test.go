//go:build linux

package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/eskit/eskit/internal/childtest"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/lease"
	"github.com/eskit/eskit/outbox"
)

// The environment of the re-executed test binary: its presence makes
// TestRelayFreezeFailover the child relay.
const (
	freezeEnvDB     = "ESKIT_RELAY_FREEZE_DB"
	freezeEnvNATS   = "ESKIT_RELAY_FREEZE_NATS"
	freezeEnvPrefix = "ESKIT_RELAY_FREEZE_PREFIX"
)

const freezeTTL = 2 * time.Second

func freezeOpts(prefix string, log *slog.Logger, extra ...outbox.Option) []outbox.Option {
	return append([]outbox.Option{
		outbox.WithPrefix(prefix), outbox.WithSchema(testSchema), outbox.WithLeaseTTL(freezeTTL),
		outbox.WithStandbyInterval(50 * time.Millisecond), outbox.WithCheckInterval(100 * time.Millisecond),
		outbox.WithCheckpointInterval(20 * time.Millisecond), outbox.WithAckTimeout(2 * time.Second),
		outbox.WithLogger(log),
	}, extra...)
}

// A relay leads in a child process, which is frozen with SIGSTOP; a
// standby relay in this process takes over within the lease TTL and
// publishes what is appended meanwhile. On SIGCONT the woken leader
// publishes nothing more, and its checkpoint writes are refused, by its
// own check and by the lease table. JetStream holds every record once, in
// feed order.
func TestRelayFreezeFailover(t *testing.T) {
	if url := os.Getenv(freezeEnvDB); url != "" {
		freezeRelayChild(t, url, os.Getenv(freezeEnvNATS), os.Getenv(freezeEnvPrefix))
		return
	}
	ctx := t.Context()
	url := testsvc.Database(t)
	pool := testsvc.PoolFor(t, url)
	require.NoError(t, pgstore.Migrate(ctx, pool, testSchema))
	store := newPgStore(t, pool)
	b := newBroker(t)
	appendEvents(t, ctx, store, awkwardStreams, 60, "before")
	waitFeed(t, store, 60)

	child := childtest.Start(t, "TestRelayFreezeFailover", "RELAY", freezeEnvDB+"="+url, freezeEnvNATS+"="+b.url, freezeEnvPrefix+"="+b.prefix)
	pid := child.PID()
	next := child.Next
	var childToken uint64
	_, err := fmt.Sscanf(next("leads", 60*time.Second), "leads token %d", &childToken)
	require.NoError(t, err)
	next("caught-up", 30*time.Second)

	// The standby in this process waits while the child leads.
	standby, err := outbox.NewRelay(store, pool, b.js, freezeOpts(b.prefix, slog.New(slog.NewTextHandler(testWriter{t}, nil)))...)
	require.NoError(t, err)
	runRelay(t, standby)
	requireClosed(t, standby.Started(), "Started")
	eventually(t, 10*time.Second, "the standby to see the child's lease", func() bool {
		return standby.Stats().Lease.Token == childToken
	})
	time.Sleep(2 * freezeTTL)
	require.False(t, standby.Stats().Leader, "the standby took over from a live leader")
	require.NoError(t, standby.Ready(), "a standby is ready")

	require.NoError(t, syscall.Kill(-pid, syscall.SIGSTOP))
	stopped := time.Now()
	appendEvents(t, ctx, store, awkwardStreams, 40, "frozen")
	eventually(t, freezeTTL+5*time.Second, "the standby to take over", func() bool { return standby.Stats().Leader })
	after := time.Since(stopped)
	token := standby.Stats().Lease.Token
	t.Logf("the standby took over %s after SIGSTOP (ttl %s), token %d (the frozen leader's: %d)", after, freezeTTL, token, childToken)
	require.Less(t, after, freezeTTL+1500*time.Millisecond, "takeover within the ttl (+1.5 s)")
	require.Greater(t, token, childToken)
	eventually(t, 20*time.Second, "the new leader to publish what was appended", caughtUp(t, standby, store))
	published := streamLastSeq(t, b)

	require.NoError(t, syscall.Kill(-pid, syscall.SIGCONT))
	woke := next("woke", 10*time.Second)
	require.Contains(t, woke, "leader=false", "the woken relay still leads: %s", woke)
	stale := next("stale-write", 10*time.Second)
	require.Contains(t, stale, "not-leader=true lost=true", "the deposed leader's checkpoint write was not refused: %s", stale)
	quiet := next("quiet", 10*time.Second)
	require.Contains(t, quiet, "more=0", "the woken relay published after it woke: %s", quiet)
	require.NoError(t, child.Wait(20*time.Second))

	// A checkpoint write with the frozen leader's token is refused by the
	// lease table itself, even past the holder's own checks.
	leases := pgstore.NewLeases(pool, testSchema)
	tag, err := pool.Exec(ctx, `UPDATE `+testSchema+`.checkpoints SET pos_tx = 1 << 40 WHERE name = $1 AND `+leases.GuardSQL(2, 3),
		outbox.DefaultName, outbox.LeaseName(outbox.DefaultName), int64(childToken))
	require.NoError(t, err)
	require.Zero(t, tag.RowsAffected(), "the lease table accepted the deposed token")

	appendEvents(t, ctx, store, awkwardStreams, 20, "after")
	eventually(t, 20*time.Second, "the new leader to go on", caughtUp(t, standby, store))
	require.True(t, standby.Stats().Leader)
	cp, err := outbox.ReadCheckpoint(ctx, pool, testSchema, outbox.DefaultName)
	require.NoError(t, err)
	require.False(t, cp.Before(standby.Stats().Position), "the checkpoint is the new leader's")
	require.Greater(t, streamLastSeq(t, b), published)
	// Every record once (JetStream's de-duplication by Nats-Msg-Id keeps
	// re-publications out), in feed order.
	requireSameFeed(t, feedAll(t, store), b.records(t))
}

func streamLastSeq(t *testing.T, b *broker) uint64 {
	t.Helper()
	s, err := b.js.Stream(context.Background(), b.stream)
	require.NoError(t, err)
	info, err := s.Info(context.Background())
	require.NoError(t, err)
	return info.State.LastSeq
}

// recordingCheckpoints remembers the last leadership it handed out.
type recordingCheckpoints struct {
	*outbox.PostgresCheckpoints
	last chan outbox.Leadership
}

func (c *recordingCheckpoints) Lead(ctx context.Context, name string, held *lease.Held) (outbox.Leadership, error) {
	l, err := c.PostgresCheckpoints.Lead(ctx, name, held)
	if err == nil {
		select {
		case <-c.last:
		default:
		}
		c.last <- l
	}
	return l, err
}

// freezeRelayChild runs a relay that leads, reports on stdout, and once
// it wakes from a freeze reports whether it still leads, tries one more
// checkpoint write through its old leadership, and whether it published
// anything after waking; then it stops.
func freezeRelayChild(t *testing.T, dbURL, natsURL, prefix string) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store, err := pgstore.New(ctx, pool, pgstore.WithSchema(testSchema))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	nc, err := nats.Connect(natsURL, outbox.ConnectOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cps := &recordingCheckpoints{PostgresCheckpoints: outbox.NewPostgresCheckpoints(pool, testSchema), last: make(chan outbox.Leadership, 1)}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	r, err := outbox.NewRelay(store, pool, js, freezeOpts(prefix, log, outbox.WithCheckpoints(cps))...)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	until := func(within time.Duration, cond func() bool) bool {
		for end := time.Now().Add(within); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			if cond() {
				return true
			}
		}
		return false
	}
	if !until(30*time.Second, func() bool { return r.Stats().Leader }) {
		t.Fatal("never led")
	}
	fmt.Printf("RELAY leads token %d\n", r.Stats().Lease.Token)
	if !until(30*time.Second, func() bool { head, err := store.Head(ctx); return err == nil && r.Stats().Position == head }) {
		t.Fatal("never caught up")
	}
	fmt.Printf("RELAY caught-up %s\n", r.Stats().Position)

	last := time.Now()
	for {
		time.Sleep(10 * time.Millisecond)
		gap := time.Since(last)
		last = time.Now()
		if gap > freezeTTL/2 {
			break
		}
	}
	// Woken from the freeze, past the lease's deadline.
	out := nc.Stats().OutMsgs
	until(5*time.Second, func() bool { return !r.Stats().Leader })
	fmt.Printf("RELAY woke leader=%v lease=%v\n", r.Stats().Leader, r.Stats().Lease)
	var l outbox.Leadership
	select {
	case l = <-cps.last:
	default:
		t.Fatal("no leadership recorded")
	}
	werr := l.Save(ctx, eventstore.Position{Tx: 1 << 40})
	fmt.Printf("RELAY stale-write not-leader=%v lost=%v (%v)\n", errors.Is(werr, outbox.ErrNotLeader), errors.Is(werr, lease.ErrLost), werr)
	time.Sleep(freezeTTL)
	fmt.Printf("RELAY quiet more=%d leader=%v\n", nc.Stats().OutMsgs-out, r.Stats().Leader)
}
