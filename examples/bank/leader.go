package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/backoff"
)

// leaderInterval is how often a standby tries to take a leader lock, and
// how often the leader checks that its lock's connection is alive.
const leaderInterval = time.Second

// leaderBackoff paces the attempts after errors (PostgreSQL unreachable,
// the work failing).
var leaderBackoff = backoff.Policy{Initial: leaderInterval, Max: 30 * time.Second, Jitter: 0.2}

// runAsLeader runs fn while this process holds the session-level advisory
// lock named key, on a connection of its own taken out of the pool: one
// process at a time runs fn, the others stand by and take over when the
// leader stops or its connection dies (PostgreSQL then releases the
// lock). fn's context is cancelled when the lock's connection fails. fn
// is restarted (after leaderBackoff's delay) when it fails; runAsLeader
// returns when ctx ends.
func runAsLeader(ctx context.Context, pool *pgxpool.Pool, key string, log *slog.Logger, fn func(context.Context) error) {
	retries := backoff.New(leaderBackoff)
	for ctx.Err() == nil {
		_, err := leadOnce(ctx, pool, key, log, fn)
		wait := leaderInterval
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			log.Error("leader: "+key, "err", err)
			wait = retries.Next()
		default:
			retries.Reset()
		}
		if backoff.Sleep(ctx, wait) != nil {
			return
		}
	}
}

// leadOnce tries the lock once and, when it wins, runs fn under it. It
// reports whether it led.
func leadOnce(ctx context.Context, pool *pgxpool.Pool, key string, log *slog.Logger, fn func(context.Context) error) (bool, error) {
	pc, err := pool.Acquire(ctx)
	if err != nil {
		return false, fmt.Errorf("acquire a connection: %w", err)
	}
	// The lock belongs to the session: keep the connection out of the pool
	// and close it when done, which releases the lock for sure.
	conn := pc.Hijack()
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended($1, 0))`, key).Scan(&got); err != nil {
		return false, fmt.Errorf("try the lock: %w", err)
	}
	if !got {
		return false, nil
	}
	log.Info("leader: took the lock; running", "lock", key)
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		watch(runCtx, conn, cancel)
	}()
	err = fn(runCtx)
	cancel(nil)
	<-watched
	if cause := context.Cause(runCtx); cause != nil && !errors.Is(cause, context.Canceled) {
		return true, fmt.Errorf("lost the lock's connection: %w", cause)
	}
	if err != nil && ctx.Err() == nil {
		return true, err
	}
	log.Info("leader: stepped down", "lock", key)
	return true, nil
}

// watch pings the lock's connection and cancels the leader's work when it
// fails.
func watch(ctx context.Context, conn *pgx.Conn, cancel context.CancelCauseFunc) {
	t := time.NewTicker(leaderInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			pctx, pcancel := context.WithTimeout(ctx, leaderInterval)
			err := conn.Ping(pctx)
			pcancel()
			if err != nil && ctx.Err() == nil {
				cancel(err)
				return
			}
		}
	}
}
