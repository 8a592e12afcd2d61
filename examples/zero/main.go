// Command zero is the README's "Zero to a service": a wallet aggregate whose
// events go to PostgreSQL, the outbox relay that publishes them to NATS
// JetStream, a projection that keeps the balances in Redis, and a query that
// reads its own write. It runs against the services named by
// ESKIT_POSTGRES_URL, ESKIT_NATS_URL and ESKIT_REDIS_URL (local servers by
// default):
//
//	go run ./examples/zero
//
// The region between the README markers is the README's listing, word for
// word (zero_test.go checks it).
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/natsevent"
	"github.com/eskit/eskit/outbox"
	"github.com/eskit/eskit/projection"
	"github.com/eskit/eskit/querybus"
)

func main() {
	err := run(context.Background(), os.Stdout,
		cmp.Or(os.Getenv("ESKIT_POSTGRES_URL"), "postgres://postgres@127.0.0.1:5432/postgres"),
		cmp.Or(os.Getenv("ESKIT_NATS_URL"), nats.DefaultURL),
		cmp.Or(os.Getenv("ESKIT_REDIS_URL"), "redis://127.0.0.1:6379/0"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "zero:", err)
		os.Exit(1)
	}
}

// README:begin

// The domain: a command, an event, and the decider (state: the balance).
type Deposit struct{ Amount int64 }
type Deposited struct {
	Amount int64 `json:"amount"`
}

type Wallet struct{}

func (Wallet) Initial() int64 { return 0 }
func (Wallet) Decide(balance int64, c Deposit) ([]Deposited, error) {
	if c.Amount <= 0 {
		return nil, errors.New("amount must be positive")
	}
	return []Deposited{{Amount: c.Amount}}, nil
}
func (Wallet) Evolve(balance int64, e Deposited) int64 { return balance + e.Amount }

type GetBalance struct{ Wallet string } // the query

// prefix is the deployment's one word: the relay's subjects (zero.>), its
// JetStream stream (ZERO) and the read models' keys (zero:...).
const prefix = "zero"

func run(ctx context.Context, out io.Writer, postgresURL, natsURL, redisURL string) (err error) {
	// The write side: events in PostgreSQL, decided by the aggregate.
	pool, err := pgxpool.New(ctx, postgresURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	store, err := pgstore.New(ctx, pool, pgstore.WithAutoMigrate())
	if err != nil {
		return err
	}
	defer store.Close()
	reg := eventstore.NewRegistry()
	if err := eventstore.Register[Deposited](reg, "wallet.Deposited"); err != nil {
		return err
	}
	wallets, err := aggregate.NewRepository(store, reg, Wallet{})
	if err != nil {
		return err
	}
	defer wallets.Close()

	// The relay: every committed event to JetStream, in order.
	nc, err := nats.Connect(natsURL, outbox.ConnectOptions()...)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if _, err := outbox.EnsureStream(ctx, js, outbox.StreamConfig{Prefix: prefix}); err != nil {
		return err
	}
	relay, err := outbox.NewRelay(store, pool, js, outbox.WithPrefix(prefix))
	if err != nil {
		return err
	}

	// The read side: a projection of the balances into Redis, fed from JetStream.
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	balances := projection.New("balances", projection.Typed(reg,
		func(ctx context.Context, b *projection.Batch, rec eventstore.Record, e Deposited) error {
			b.Pipe().HIncrBy(ctx, b.Key("balance"), rec.StreamID, e.Amount)
			return nil
		}))
	runner, err := projection.NewRunner(rdb, store, []projection.Projection{balances},
		projection.WithPrefix(prefix), projection.WithJetStream(js, natsevent.StreamName(prefix)))
	if err != nil {
		return err
	}

	// Run the relay and the runner (for as long as the service runs).
	ctx, stop := context.WithCancel(ctx)
	workers, ctx := errgroup.WithContext(ctx)
	workers.Go(func() error { return relay.Run(ctx) })
	workers.Go(func() error { return runner.Run(ctx) })
	defer func() { stop(); err = errors.Join(err, workers.Wait()) }()

	// The query: it waits until the projection has the position asked for.
	queries := querybus.New(querybus.WithWaiter(runner))
	err = querybus.Register(queries, func(ctx context.Context, q GetBalance) (int64, error) {
		key, err := runner.Reader().StreamKey(ctx, "balances", q.Wallet, "balance")
		if err != nil {
			return 0, err
		}
		return rdb.HGet(ctx, key, q.Wallet).Int64()
	}, querybus.ReadsFrom("balances"))
	if err != nil {
		return err
	}

	// A command, then a query that reads its own write.
	id := "wallet-" + uuid.NewString()
	res, err := wallets.Handle(ctx, id, Deposit{Amount: 100})
	if err != nil {
		return err
	}
	balance, err := querybus.Ask[GetBalance, int64](querybus.WithMinPosition(ctx, "", res.Position), queries, GetBalance{Wallet: id})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "deposited at %s; the read model says %d\n", res.Position, balance)
	return nil
}

// README:end
