package telemetry_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/internal/infra/natstest"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/outbox"
	"github.com/eskit/eskit/projection"
	"github.com/eskit/eskit/querybus"
	"github.com/eskit/eskit/telemetry"
)

// The test domain: accounts that take deposits.
type (
	deposit struct {
		ID      uuid.UUID
		Account string
		Amount  int64
	}
	deposited struct {
		Amount int64 `json:"amount"`
	}
	getBalance struct{ Account string }
)

func (c deposit) CommandID() uuid.UUID { return c.ID }

var errNonPositive = errors.New("deposit must be positive")

// poison is an amount the projection refuses: its records are parked.
const poison = 13

var errPoison = errors.New("poisonous amount")

var accounts = aggregate.DeciderFuncs[int64, deposit, deposited]{
	DecideFunc: func(_ int64, c deposit) ([]deposited, error) {
		if c.Amount <= 0 {
			return nil, errNonPositive
		}
		return []deposited{{Amount: c.Amount}}, nil
	},
	EvolveFunc: func(s int64, e deposited) int64 { return s + e.Amount },
}

const balances = "balances"

// flow is the whole eskit pipeline on real services: command bus,
// aggregate repository, PostgreSQL store, relay to in-process JetStream,
// projection runner on Redis, query bus.
type flow struct {
	store  *pgstore.Store
	repo   *aggregate.Repository[int64, deposit, deposited]
	cmds   *commandbus.Bus
	relay  *outbox.Relay
	runner *projection.Runner
	rdb    *redis.Client
	prefix string
	reg    *eventstore.Registry
	qs     *querybus.Bus
}

func newFlow(t *testing.T, opts ...telemetry.Option) *flow {
	t.Helper()
	ctx := context.Background()
	pool := testsvc.Pool(t)
	store, err := pgstore.New(ctx, pool, pgstore.WithAutoMigrate(), pgstore.WithTelemetry(opts...))
	require.NoError(t, err)
	t.Cleanup(store.Close)

	reg := eventstore.NewRegistry()
	require.NoError(t, eventstore.Register[deposited](reg, "deposited"))
	repo, err := aggregate.NewRepository(store, reg, accounts, aggregate.WithMaxRetries(0))
	require.NoError(t, err)
	t.Cleanup(func() { _ = repo.Close() })

	cmds := commandbus.New(commandbus.WithMiddleware(commandbus.Telemetry(opts...)))
	require.NoError(t, commandbus.Register(cmds, func(ctx context.Context, c deposit) (commandbus.Result, error) {
		res, err := repo.Handle(ctx, "account-"+c.Account, c, aggregate.WithCommandID(c.ID))
		if err != nil {
			return commandbus.Result{}, err
		}
		return commandbus.Result{StreamID: res.StreamID, Version: res.Version, Position: res.Position, Duplicate: res.Duplicate}, nil
	}))

	srv := natstest.Start(t)
	js := natstest.JetStream(t, srv.URL())
	subjects := strings.ReplaceAll(testsvc.Name("ev"), "_", "")
	stream := strings.ToUpper(subjects)
	_, err = outbox.EnsureStream(ctx, js, outbox.StreamConfig{Prefix: subjects, Name: stream})
	require.NoError(t, err)
	relay, err := outbox.NewRelay(store, pool, js, outbox.WithPrefix(subjects), outbox.WithTelemetry(opts...))
	require.NoError(t, err)

	rdb, prefix := testsvc.Redis(t)
	proj := projection.New(balances, projection.Typed(reg, func(ctx context.Context, b *projection.Batch, rec eventstore.Record, ev deposited) error {
		if ev.Amount == poison {
			return projection.Permanent(errPoison)
		}
		return b.Pipe().HIncrBy(ctx, b.Key("balance"), rec.StreamID, ev.Amount).Err()
	}))
	runner, err := projection.NewRunner(rdb, store, []projection.Projection{proj},
		projection.WithPrefix(prefix), projection.WithJetStream(js, stream), projection.WithTelemetry(opts...))
	require.NoError(t, err)

	qs := querybus.New(querybus.WithWaiter(runner), querybus.WithMiddleware(querybus.Telemetry(opts...)))
	require.NoError(t, querybus.Register(qs, func(ctx context.Context, q getBalance) (int64, error) {
		ns, err := runner.Namespace(ctx, balances)
		if err != nil {
			return 0, err
		}
		n, err := rdb.HGet(ctx, ns.Key("balance"), "account-"+q.Account).Int64()
		if errors.Is(err, redis.Nil) {
			return 0, nil
		}
		return n, err
	}, querybus.ReadsFrom(balances)))

	f := &flow{store: store, repo: repo, cmds: cmds, relay: relay, runner: runner, rdb: rdb, prefix: prefix, reg: reg, qs: qs}
	runCtx, cancel := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	runnerDone := make(chan error, 1)
	go func() { relayDone <- relay.Run(runCtx) }()
	go func() { runnerDone <- runner.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		for _, done := range []chan error{relayDone, runnerDone} {
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Error("relay or runner did not stop")
			}
		}
	})
	return f
}

// deposit dispatches a deposit and waits until the projection has applied
// it.
func (f *flow) deposit(t *testing.T, ctx context.Context, account string, amount int64) commandbus.Result {
	t.Helper()
	res, err := f.cmds.Dispatch(ctx, deposit{ID: uuid.New(), Account: account, Amount: amount})
	require.NoError(t, err)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, f.runner.WaitFor(wctx, balances, res.Position))
	return res
}

// balance asks the query bus for an account's balance, reading its own
// write at pos.
func (f *flow) balance(t *testing.T, ctx context.Context, account string, pos eventstore.Position) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(querybus.WithMinPosition(ctx, "", pos), 30*time.Second)
	defer cancel()
	n, err := querybus.Ask[getBalance, int64](ctx, f.qs, getBalance{Account: account})
	require.NoError(t, err)
	return n
}

// eventually waits (up to timeout) until cond holds.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
