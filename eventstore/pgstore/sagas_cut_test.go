//go:build linux

package pgstore_test

import (
	"context"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore/pgtest"
	"github.com/eskit/eskit/internal/netproxy"
	"github.com/eskit/eskit/internal/require"
	"github.com/eskit/eskit/lease"
	"github.com/eskit/eskit/saga"
)

// countingSagas counts the partition claims of a runner.
type countingSagas struct {
	saga.Store
	claims atomic.Int32
}

func (s *countingSagas) Claim(ctx context.Context, f saga.Fence) (saga.Claimed, error) {
	c, err := s.Store.Claim(ctx, f)
	if err == nil {
		s.claims.Add(1)
	}
	return c, err
}

// The leading saga runner's link to PostgreSQL is cut (its connections
// stay open, nothing gets through) while a standby reaches everything:
// the standby takes the partition over within the lease TTL and finishes
// the instances, each command applied and each deadline fired once. The
// cut lasts several TTLs; once it heals, the cut-off runner stands by,
// and when the new leader stops it takes the partition back.
func TestSagaCutOffFromPostgresFailsOver(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	dbURL := pgtest.Database(t)
	pool := pgtest.PoolFor(t, dbURL)
	w, err := newFzWorld(ctx, pool, true)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `CREATE TABLE fz_dispatches (proc text NOT NULL, command_id text NOT NULL, account text NOT NULL, amount int NOT NULL, duplicate bool NOT NULL)`)
	require.NoError(t, err)
	deposit := func(n int) {
		for _, acc := range sagaFreezeAccounts {
			ev, err := w.reg.Encode(fzDeposited{Account: acc, N: n}, nil)
			require.NoError(t, err)
			_, err = w.es.Append(ctx, "deposits-"+acc, eventstore.Any, ev)
			require.NoError(t, err)
		}
	}
	// start runs the saga on w as holder, counting its claims.
	start := func(w *fzWorld, pool *pgxpool.Pool, holder string) (*countingSagas, func()) {
		quiet := slog.New(slog.DiscardHandler)
		sagas := &countingSagas{Store: w.sagas}
		r, err := saga.NewRunner(w.def, sagas, w.es, &fzDispatcher{w: w, pool: pool, proc: holder},
			saga.WithPollInterval(20*time.Millisecond), saga.WithLogger(quiet),
			saga.WithLease(w.es.Leases(), lease.WithTTL(sagaFreezeTTL), lease.WithHolder(holder), lease.WithLogger(quiet)))
		require.NoError(t, err)
		rctx, stopRun := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- r.Run(rctx) }()
		<-r.Started()
		var once sync.Once
		stop := func() {
			once.Do(func() {
				stopRun()
				require.NoError(t, <-done)
			})
		}
		t.Cleanup(stop)
		return sagas, stop
	}

	// Runner A reaches PostgreSQL through the proxy.
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	proxy := netproxy.Start(t, u.Host)
	u.Host = proxy.Addr()
	cutPool := pgtest.PoolFor(t, u.String())
	wA, err := newFzWorld(ctx, cutPool, false)
	require.NoError(t, err)
	sagasA, stopA := start(wA, cutPool, "A")
	require.Eventually(t, func() bool { return sagasA.claims.Load() == 1 }, 10*time.Second, 5*time.Millisecond, "A never claimed")
	deposit(0)
	require.Eventually(t, func() bool {
		for _, acc := range sagaFreezeAccounts {
			if balance, _, err := w.repo.Load(ctx, "account-"+acc); err != nil || balance != 1 {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond, "A did not credit the first deposits")

	sagasB, stopB := start(w, pool, "B")

	proxy.Freeze()
	t.Cleanup(proxy.Thaw) // before the runners stop
	cut := time.Now()
	deposit(1)
	require.Eventually(t, func() bool { return sagasB.claims.Load() == 1 }, sagaFreezeTTL+5*time.Second, 5*time.Millisecond, "B never took over")
	after := time.Since(cut)
	t.Logf("the standby took over %s after the cut (ttl %s)", after, sagaFreezeTTL)
	require.True(t, after < sagaFreezeTTL+1500*time.Millisecond, "takeover after %s, want within the ttl of %s (+1.5 s)", after, sagaFreezeTTL)
	deposit(2)
	require.Eventually(t, func() bool { return w.finished(ctx) }, 30*time.Second, 20*time.Millisecond, "the standby did not finish the instances")

	// A long cut, then it heals: A stands by while B leads.
	time.Sleep(time.Until(cut.Add(5 * sagaFreezeTTL)))
	proxy.Thaw()
	time.Sleep(sagaFreezeTTL)
	require.Equal(t, int32(1), sagasA.claims.Load(), "the healed runner claimed the partition from a live leader")

	// B stops: A takes the partition back.
	stopB()
	require.Eventually(t, func() bool { return sagasA.claims.Load() == 2 }, sagaFreezeTTL+10*time.Second, 5*time.Millisecond, "the healed runner did not take over again")
	stopA()

	w.requireCreditedOnce(t, ctx, pool)
}
