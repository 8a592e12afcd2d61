package projection_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/memstore"
	"github.com/eskit/eskit/internal/infra/embedded"
	"github.com/eskit/eskit/projection"
	"github.com/eskit/eskit/querybus"
)

// Events of the examples' wallets.
type (
	WalletDeposited struct {
		Amount int64 `json:"amount"`
	}
	WalletWithdrawn struct {
		Amount int64 `json:"amount"`
	}
)

// exampleEnv is what the examples run on: an event store, a Redis (an
// in-process one here; a service passes its go-redis client) and a
// registry.
type exampleEnv struct {
	store *memstore.Store
	rdb   *redis.Client
	reg   *eventstore.Registry
	close func()
}

func newExampleEnv() exampleEnv {
	srv, err := embedded.StartRedis("")
	if err != nil {
		panic(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	reg := eventstore.NewRegistry()
	if err := errors.Join(
		eventstore.Register[WalletDeposited](reg, "wallet.Deposited"),
		eventstore.Register[WalletWithdrawn](reg, "wallet.Withdrawn"),
	); err != nil {
		panic(err)
	}
	return exampleEnv{store: memstore.New(), rdb: rdb, reg: reg, close: func() { _ = rdb.Close(); srv.Close() }}
}

// append stores one event and returns its position.
func (e exampleEnv) append(ctx context.Context, stream string, v any) eventstore.Position {
	ev, err := e.reg.Encode(v, nil)
	if err != nil {
		panic(err)
	}
	res, err := e.store.Append(ctx, stream, eventstore.Any, ev)
	if err != nil {
		panic(err)
	}
	return res.Position
}

// startRunner runs the runner until the returned function is called, which
// waits for it to stop.
func startRunner(ctx context.Context, runner *projection.Runner) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- runner.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			panic(err)
		}
	}
}

// balances keeps each wallet's balance in one Redis hash.
func balances(reg *eventstore.Registry) projection.Projection {
	return projection.New("balances", projection.Typed(reg,
		func(ctx context.Context, b *projection.Batch, rec eventstore.Record, ev any) error {
			switch e := ev.(type) {
			case WalletDeposited:
				b.Pipe().HIncrBy(ctx, b.Key("balance"), rec.StreamID, e.Amount)
			case WalletWithdrawn:
				b.Pipe().HIncrBy(ctx, b.Key("balance"), rec.StreamID, -e.Amount)
			}
			return nil
		}))
}

// A projection turns the store's events into a Redis read model; the
// runner applies them in batches, each committed with its checkpoint, and
// a reader waits for a position before it reads (read your writes).
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	env := newExampleEnv()
	defer env.close()

	// Without WithJetStream the runner follows the store's feed; with it,
	// it consumes the relay's stream and checks it against the store.
	runner, err := projection.NewRunner(env.rdb, env.store, []projection.Projection{balances(env.reg)},
		projection.WithPrefix("bank:"), projection.WithPollInterval(5*time.Millisecond))
	if err != nil {
		panic(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- runner.Run(runCtx) }()

	env.append(ctx, "wallet-1", WalletDeposited{Amount: 100})
	pos := env.append(ctx, "wallet-1", WalletWithdrawn{Amount: 30})

	// The query side, in any process.
	reader := projection.NewReader(env.rdb, "bank:", env.store)
	if err := reader.WaitForStream(ctx, "balances", "wallet-1", pos); err != nil {
		panic(err)
	}
	key, _ := reader.StreamKey(ctx, "balances", "wallet-1", "balance")
	balance, _ := env.rdb.HGet(ctx, key, "wallet-1").Int64()
	fmt.Println(key, balance)

	stop()
	fmt.Println(<-done)
	// Output:
	// bank:{balances:0}:v1:m:balance 70
	// <nil>
}

// Side effects (an e-mail, a webhook) run after the batch's commit, once,
// and never while a read model is rebuilt from history.
func ExampleBatch_AfterCommit() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	env := newExampleEnv()
	defer env.close()

	notify := make(chan string, 10)
	large := projection.New("large-deposits", projection.Typed(env.reg,
		func(ctx context.Context, b *projection.Batch, rec eventstore.Record, e WalletDeposited) error {
			if e.Amount < 1000 {
				return nil
			}
			b.Pipe().SAdd(ctx, b.Key("wallets"), rec.StreamID)
			b.AfterCommit(func(context.Context) { notify <- fmt.Sprintf("%s deposited %d", rec.StreamID, e.Amount) })
			return nil
		}))
	runner, _ := projection.NewRunner(env.rdb, env.store, []projection.Projection{large},
		projection.WithPrefix("bank:"), projection.WithPollInterval(5*time.Millisecond))
	defer startRunner(ctx, runner)()
	// The first build replays what the store held when it began, without
	// side effects; what comes after is new.
	if err := runner.WaitFor(ctx, "large-deposits", eventstore.Position{}); err != nil {
		panic(err)
	}

	env.append(ctx, "wallet-1", WalletDeposited{Amount: 5})
	env.append(ctx, "wallet-2", WalletDeposited{Amount: 5000})
	select {
	case n := <-notify:
		fmt.Println(n)
	case <-ctx.Done():
		panic(ctx.Err())
	}

	// A blue/green rebuild replays the history into a new version of the
	// read model: no notification this time.
	if err := runner.Rebuild(ctx, "large-deposits"); err != nil {
		panic(err)
	}
	ns, _ := runner.Namespace(ctx, "large-deposits")
	wallets, _ := env.rdb.SMembers(ctx, ns.Key("wallets")).Result()
	fmt.Println(ns.Version, wallets, len(notify))
	// Output:
	// wallet-2 deposited 5000
	// 2 [wallet-2] 0
}

// The query bus waits for the projection before it runs the query: a
// caller that passes the position of its command reads its own write.
func ExampleRunner_WaitFor() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	env := newExampleEnv()
	defer env.close()
	runner, _ := projection.NewRunner(env.rdb, env.store, []projection.Projection{balances(env.reg)},
		projection.WithPrefix("bank:"), projection.WithPollInterval(5*time.Millisecond))
	defer startRunner(ctx, runner)()

	type GetBalance struct{ Wallet string }
	queries := querybus.New(querybus.WithWaiter(querybus.CheckpointWaiterFunc(runner.WaitFor)))
	_ = querybus.Register(queries, func(ctx context.Context, q GetBalance) (int64, error) {
		key, err := runner.Reader().StreamKey(ctx, "balances", q.Wallet, "balance")
		if err != nil {
			return 0, err // a *projection.NotReadyError while the model is being built
		}
		return env.rdb.HGet(ctx, key, q.Wallet).Int64()
	}, querybus.ReadsFrom("balances"))

	pos := env.append(ctx, "wallet-1", WalletDeposited{Amount: 100}) // a command's Result.Position
	balance, err := querybus.Ask[GetBalance, int64](querybus.WithMinPosition(ctx, "", pos), queries, GetBalance{Wallet: "wallet-1"})
	fmt.Println(balance, err)
	// Output: 100 <nil>
}

// A record whose apply keeps failing is parked, and the projection goes
// on; later records of its stream wait behind it, so the read model never
// shows a stream out of order. Parked records can be retried or skipped.
func ExampleRunner_Parked() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	env := newExampleEnv()
	defer env.close()
	strict := projection.New("strict", projection.Typed(env.reg,
		func(ctx context.Context, b *projection.Batch, rec eventstore.Record, e WalletDeposited) error {
			if e.Amount <= 0 {
				return projection.Permanent(fmt.Errorf("amount %d is not positive", e.Amount)) // no retries
			}
			b.Pipe().HIncrBy(ctx, b.Key("balance"), rec.StreamID, e.Amount)
			return nil
		}))
	runner, _ := projection.NewRunner(env.rdb, env.store, []projection.Projection{strict},
		projection.WithPrefix("bank:"), projection.WithPollInterval(5*time.Millisecond))
	defer startRunner(ctx, runner)()

	env.append(ctx, "wallet-1", WalletDeposited{Amount: -5})
	env.append(ctx, "wallet-1", WalletDeposited{Amount: 10})
	pos := env.append(ctx, "wallet-2", WalletDeposited{Amount: 7})
	_ = runner.WaitFor(ctx, "strict", pos)

	parked, _ := runner.Parked(ctx, "strict")
	for _, p := range parked {
		if p.BlockedBy == uuid.Nil {
			fmt.Printf("%s v%d failed after %d attempt(s): %s\n", p.Record.StreamID, p.Record.Version, p.Attempts, p.Error)
		} else {
			fmt.Printf("%s v%d waits behind it\n", p.Record.StreamID, p.Record.Version)
		}
	}
	st, _ := runner.Status(ctx, "strict")
	fmt.Println("parked:", st.Parked)
	// Output:
	// wallet-1 v1 failed after 1 attempt(s): amount -5 is not positive
	// wallet-1 v2 waits behind it
	// parked: 2
}
