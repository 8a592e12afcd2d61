//go:build linux

package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eskit/eskit/internal/childtest"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/eventstore/pgstore/pgtest"
	"github.com/eskit/eskit/internal/require"
	"github.com/eskit/eskit/lease"
	"github.com/eskit/eskit/saga"
)

// sagaFreezeChildEnv names the database a re-executed test binary runs the
// saga on; its presence makes TestSagaFreezeFailover the child.
const sagaFreezeChildEnv = "ESKIT_SAGA_FREEZE_CHILD_DB"

const (
	sagaFreezeTTL   = 1500 * time.Millisecond
	sagaFreezeBonus = 2 * time.Second // the saga's deadline, after an account's first deposit
	// The child's retry of the command whose reply it "lost": after the
	// freeze, so that the takeover sends it again.
	sagaFreezeRetry = 4 * time.Second
)

var sagaFreezeAccounts = []string{"a", "b", "c"}

// Deposited is appended by the test; the saga credits 1 for each, and 100
// once, by the "bonus" deadline after an account's first deposit.
type fzDeposited struct {
	Account string `json:"account"`
	N       int    `json:"n"`
}

type fzCredit struct {
	Account string `json:"account"`
	Amount  int    `json:"amount"`
}

type fzCredited struct {
	Amount int `json:"amount"`
}

type fzBonus struct {
	Deposits int `json:"deposits"`
}

// fzWorld is the account aggregate behind a command bus, and the saga.
type fzWorld struct {
	es    *pgstore.Store
	sagas *pgstore.SagaStore
	reg   *eventstore.Registry
	repo  *aggregate.Repository[int, any, any]
	bus   *commandbus.Bus
	def   *saga.Definition[fzBonus]
}

func newFzWorld(ctx context.Context, pool *pgxpool.Pool, migrate bool) (*fzWorld, error) {
	opts := []pgstore.Option{pgstore.WithSchema("eskit")}
	if migrate {
		opts = append(opts, pgstore.WithAutoMigrate())
	}
	es, err := pgstore.New(ctx, pool, opts...)
	if err != nil {
		return nil, err
	}
	w := &fzWorld{es: es, reg: eventstore.NewRegistry(), bus: commandbus.New()}
	if w.sagas, err = pgstore.NewSagaStore(pool, "eskit"); err != nil {
		return nil, err
	}
	if err := errors.Join(
		eventstore.Register[fzDeposited](w.reg, "fz.Deposited"),
		eventstore.Register[fzCredited](w.reg, "fz.Credited"),
		eventstore.Register[fzCredit](w.reg, "fz.Credit"),
	); err != nil {
		return nil, err
	}
	w.repo, err = aggregate.NewRepository(es, w.reg, aggregate.NewDecider(
		func() int { return 0 },
		func(_ int, c any) ([]any, error) {
			cr, ok := c.(fzCredit)
			if !ok {
				return nil, fmt.Errorf("unknown command %T", c)
			}
			return []any{fzCredited{Amount: cr.Amount}}, nil
		},
		func(balance int, e any) int {
			if c, ok := e.(fzCredited); ok {
				return balance + c.Amount
			}
			return balance
		}))
	if err != nil {
		return nil, err
	}
	if err := commandbus.Register(w.bus, commandbus.HandleWith(w.repo, func(_ context.Context, c fzCredit) (string, any, error) {
		return "account-" + c.Account, c, nil
	})); err != nil {
		return nil, err
	}
	w.def, err = saga.New("bonus", w.reg, w.reg,
		saga.On(func(_ eventstore.Record, d fzDeposited) string { return d.Account },
			func(_ context.Context, s *saga.Step[fzBonus], d fzDeposited) error {
				s.State().Deposits++
				s.Send(fzCredit{Account: d.Account, Amount: 1})
				if s.New() {
					s.After("bonus", sagaFreezeBonus)
				}
				return nil
			}, saga.Starts()),
		saga.OnDeadline("bonus", func(_ context.Context, s *saga.Step[fzBonus]) error {
			s.Send(fzCredit{Account: s.ID(), Amount: 100})
			s.Complete()
			return nil
		}))
	return w, err
}

// finished reports whether every account's instance is done with
// nothing left to send.
func (w *fzWorld) finished(ctx context.Context) bool {
	for _, acc := range sagaFreezeAccounts {
		in, err := w.sagas.Get(ctx, "bonus", acc)
		if err != nil || in.Status != saga.StatusDone || len(in.Commands) != 0 {
			return false
		}
	}
	return true
}

// requireCreditedOnce checks that each command took effect once: every
// account has 3 deposits' credits + the bonus of 100 (four credits), and
// every command ID of fz_dispatches was applied once.
func (w *fzWorld) requireCreditedOnce(t *testing.T, ctx context.Context, pool *pgxpool.Pool) {
	t.Helper()
	for _, acc := range sagaFreezeAccounts {
		balance, version, err := w.repo.Load(ctx, "account-"+acc)
		require.NoError(t, err)
		require.Equal(t, 103, balance, "balance of %q", acc)
		require.Equal(t, int64(4), version, "credits of %q", acc)
	}
	// Every command was dispatched, and none took effect twice. (The
	// balances and versions above say each credit took effect once; a
	// dispatch's own row may be missing when its runner lost the database
	// between the command and the row, and the command's next dispatch is
	// then answered as a duplicate.)
	var twice, cmds int
	require.NoError(t, pool.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM (SELECT command_id FROM fz_dispatches GROUP BY command_id
				HAVING count(*) FILTER (WHERE NOT duplicate) > 1) AS t),
			(SELECT count(DISTINCT command_id) FROM fz_dispatches)`).Scan(&twice, &cmds))
	require.Equal(t, 4*len(sagaFreezeAccounts), cmds)
	require.Zero(t, twice, "commands applied more than once")
}

// fzDispatcher sends through the bus and records every dispatch (which
// process, which command ID, whether the repository answered it as a
// duplicate) in the table fz_dispatches, shared by both processes.
type fzDispatcher struct {
	w    *fzWorld
	pool *pgxpool.Pool
	proc string
	// loseReply, when set, makes the first credit of 1 to this account
	// fail after it took effect, as though its reply had been lost.
	loseReply string
	lost      atomic.Bool
}

func (d *fzDispatcher) Dispatch(ctx context.Context, cmd any) (commandbus.Result, error) {
	res, err := d.w.bus.Dispatch(ctx, cmd)
	if err != nil {
		return res, err
	}
	id, _ := commandbus.CommandIDFrom(ctx)
	c, _ := cmd.(fzCredit)
	if _, err := d.pool.Exec(ctx, `INSERT INTO fz_dispatches (proc, command_id, account, amount, duplicate) VALUES ($1, $2, $3, $4, $5)`,
		d.proc, id.String(), c.Account, c.Amount, res.Duplicate); err != nil {
		return res, err
	}
	if c.Account == d.loseReply && c.Amount == 1 && d.lost.CompareAndSwap(false, true) {
		fmt.Printf("SAGA lost-reply %s\n", id)
		return commandbus.Result{}, errors.New("simulated lost reply")
	}
	return res, nil
}

// fzSagas reports what happens to the runner's writes: in the child on
// stdout, and it holds the child's first deadline commit for a while (the
// test freezes it there); in the test process it counts.
type fzSagas struct {
	saga.Store
	child  bool
	holdAt atomic.Bool

	mu      sync.Mutex
	fired   map[string]int
	claimed time.Time
}

func (s *fzSagas) Claim(ctx context.Context, f saga.Fence) (saga.Claimed, error) {
	c, err := s.Store.Claim(ctx, f)
	if err == nil {
		if s.child {
			fmt.Printf("SAGA claimed %d\n", c.Token)
		}
		s.mu.Lock()
		if s.claimed.IsZero() {
			s.claimed = time.Now()
		}
		s.mu.Unlock()
	}
	return c, err
}

func (s *fzSagas) Commit(ctx context.Context, c saga.Commit) error {
	var fired []string
	for _, u := range c.Updates {
		if u.Fired != nil {
			fired = append(fired, u.ID)
		}
	}
	if s.child && len(fired) > 0 && s.holdAt.CompareAndSwap(false, true) {
		// The lease was checked before this write: the test freezes the
		// process now, and the write goes out when it wakes, as a write
		// already on its way does (its context cannot recall it).
		fmt.Printf("SAGA firing %s token %d\n", fired[0], c.Fence.Token)
		time.Sleep(time.Second)
		ctx = context.WithoutCancel(ctx)
	}
	err := s.Store.Commit(ctx, c)
	switch {
	case err == nil:
		s.mu.Lock()
		for _, id := range fired {
			if s.fired == nil {
				s.fired = map[string]int{}
			}
			s.fired[id]++
			if s.child {
				fmt.Printf("SAGA fired %s\n", id)
			}
		}
		s.mu.Unlock()
	case s.child:
		fmt.Printf("SAGA refused token %d fenced=%v fired=%v (%v)\n", c.Fence.Token, errors.Is(err, saga.ErrFenced), fired, err)
	}
	return err
}

func (s *fzSagas) firedCount() (map[string]int, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for k, v := range s.fired {
		out[k] = v
	}
	return out, s.claimed
}

// A real process runs the saga under a PostgreSQL lease; it is frozen with
// SIGSTOP inside its first deadline commit, with commands and deadlines
// in flight; a runner in the test process takes over within the TTL and
// finishes every instance; on SIGCONT the frozen commit is refused
// (ErrFenced). Each deadline fired once, each command took effect once.
func TestSagaFreezeFailover(t *testing.T) {
	if url := os.Getenv(sagaFreezeChildEnv); url != "" {
		sagaFreezeChild(t, url)
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	url := pgtest.Database(t)
	pool := pgtest.PoolFor(t, url)
	w, err := newFzWorld(ctx, pool, true)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `CREATE TABLE fz_dispatches (proc text NOT NULL, command_id text NOT NULL, account text NOT NULL, amount int NOT NULL, duplicate bool NOT NULL)`)
	require.NoError(t, err)

	child := childtest.Start(t, "TestSagaFreezeFailover", "SAGA", sagaFreezeChildEnv+"="+url)
	pid := child.PID()
	next := child.Next
	var childToken uint64
	_, err = fmt.Sscanf(next("claimed", 60*time.Second), "claimed %d", &childToken)
	require.NoError(t, err)

	// The instances: three deposits per account.
	for n := range 3 {
		for _, acc := range sagaFreezeAccounts {
			ev, err := w.reg.Encode(fzDeposited{Account: acc, N: n}, nil)
			require.NoError(t, err)
			_, err = w.es.Append(ctx, "deposits-"+acc, eventstore.Any, ev)
			require.NoError(t, err)
		}
	}

	// A standby in this process.
	mine := &fzSagas{Store: w.sagas}
	disp := &fzDispatcher{w: w, pool: pool, proc: "parent"}
	r, err := saga.NewRunner(w.def, mine, w.es, disp, saga.WithPollInterval(20*time.Millisecond),
		saga.WithLease(w.es.Leases(), lease.WithTTL(sagaFreezeTTL), lease.WithHolder("parent")),
		saga.WithLogger(slog.New(slog.DiscardHandler)))
	require.NoError(t, err)
	runCtx, stopRun := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- r.Run(runCtx) }()
	defer func() {
		stopRun()
		<-runDone
	}()
	<-r.Started()
	require.NoError(t, r.Ready())

	next("lost-reply", 20*time.Second)
	firing := next("firing", 20*time.Second)
	require.NoError(t, syscall.Kill(-pid, syscall.SIGSTOP))
	stopped := time.Now()
	t.Logf("froze the child at %q", firing)

	// The standby takes over within the TTL and finishes every instance.
	require.Eventually(t, func() bool {
		_, at := mine.firedCount()
		return !at.IsZero()
	}, sagaFreezeTTL+5*time.Second, 5*time.Millisecond, "no takeover")
	_, took := mine.firedCount()
	after := took.Sub(stopped)
	t.Logf("the standby took over %s after SIGSTOP (ttl %s)", after, sagaFreezeTTL)
	require.True(t, after < sagaFreezeTTL+time.Second, "takeover after %s, want within the ttl of %s (+1s)", after, sagaFreezeTTL)
	require.Eventually(t, func() bool { return w.finished(ctx) }, 30*time.Second, 20*time.Millisecond, "the standby did not finish the instances")

	// The frozen child wakes: its deadline commit is refused.
	require.NoError(t, syscall.Kill(-pid, syscall.SIGCONT))
	refused := next("refused", 10*time.Second)
	require.True(t, strings.Contains(refused, "fenced=true"), "the deposed leader's commit was not fenced off: %s", refused)
	require.NoError(t, syscall.Kill(pid, syscall.SIGTERM))
	stop := next("stopped", 20*time.Second)
	require.True(t, strings.Contains(stop, "err=<nil>"), stop)
	require.NoError(t, child.Wait(20*time.Second))
	seen := child.Lines()

	// Each deadline fired once, across both processes.
	parentFired, _ := mine.firedCount()
	for _, acc := range sagaFreezeAccounts {
		child := 0
		for _, l := range seen {
			if l == "fired "+acc {
				child++
			}
		}
		require.Equal(t, 1, child+parentFired[acc], "deadline of %q fired %d times in the child, %d in the test", acc, child, parentFired[acc])
	}
	// Each command took effect once: a balance of 3 + 100, four credits,
	// each command ID applied once (its other dispatches were answered as
	// duplicates).
	w.requireCreditedOnce(t, ctx, pool)
	var dups int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM fz_dispatches WHERE duplicate`).Scan(&dups))
	require.True(t, dups >= 1, "the command whose reply was lost was not sent again after the takeover")
	var parentDups int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM fz_dispatches WHERE proc = 'parent' AND duplicate`).Scan(&parentDups))
	require.True(t, parentDups >= 1, "the takeover did not resend the command in flight")
}

// sagaFreezeChild runs the saga under the lease until SIGTERM, reporting
// on stdout.
func sagaFreezeChild(t *testing.T, url string) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	w, err := newFzWorld(ctx, pool, false)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	r, err := saga.NewRunner(w.def, &fzSagas{Store: w.sagas, child: true}, w.es,
		&fzDispatcher{w: w, pool: pool, proc: "child", loseReply: "b"},
		saga.WithPollInterval(20*time.Millisecond), saga.WithLogger(log),
		saga.WithDispatchRetry(8, backoff.Policy{Initial: sagaFreezeRetry, Max: sagaFreezeRetry}),
		saga.WithLease(w.es.Leases(), lease.WithTTL(sagaFreezeTTL), lease.WithHolder("child"), lease.WithLogger(log)))
	if err != nil {
		t.Fatal(err)
	}
	err = r.Run(ctx)
	fmt.Printf("SAGA stopped err=%v\n", err)
}
