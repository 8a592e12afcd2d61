package projection_test

import (
	"context"
	"log"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/projection"
)

// pgWallets keeps each wallet's balance in a PostgreSQL table of the
// namespace version's schema: Setup creates it, and each record queues
// one upsert on the batch (sent with the batch's others, in the
// transaction that commits the checkpoint).
func pgWallets(reg *eventstore.Registry) projection.Projection {
	return projection.New("wallets", projection.Typed(reg,
		func(_ context.Context, b *projection.Batch, rec eventstore.Record, ev any) error {
			amount := int64(0)
			switch e := ev.(type) {
			case WalletDeposited:
				amount = e.Amount
			case WalletWithdrawn:
				amount = -e.Amount
			}
			t := b.Namespace().Table("balance")
			b.Queue(`INSERT INTO `+t+` (wallet, amount) VALUES ($1, $2)
				ON CONFLICT (wallet) DO UPDATE SET amount = `+t+`.amount + EXCLUDED.amount`, rec.StreamID, amount)
			return nil
		}),
		projection.Setup(func(ctx context.Context, tx pgx.Tx, ns projection.Namespace) error {
			_, err := tx.Exec(ctx, `CREATE TABLE `+ns.Table("balance")+` (wallet text PRIMARY KEY, amount bigint NOT NULL)`)
			return err
		}))
}

// Read models in PostgreSQL: the runner's machinery (partitions, leases,
// verification, parking, rebuilds, WaitFor) is the Redis one; each batch's
// writes, stream versions and checkpoint commit in one transaction, and a
// rebuild writes a new schema, switched to atomically.
func ExamplePostgres() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:5432/app")
	if err != nil {
		log.Fatal(err)
	}
	// The bookkeeping tables (and the leases): pgstore's migrations.
	if err := pgstore.Migrate(ctx, pool, "eskit"); err != nil {
		log.Fatal(err)
	}
	store, err := pgstore.New(ctx, pool)
	if err != nil {
		log.Fatal(err)
	}
	reg := eventstore.NewRegistry()
	_ = eventstore.Register[WalletDeposited](reg, "wallet.Deposited")
	_ = eventstore.Register[WalletWithdrawn](reg, "wallet.Withdrawn")

	target := projection.Postgres(pool, "eskit")
	runner, err := projection.NewRunnerOn(target, store, []projection.Projection{pgWallets(reg)}, projection.WithPrefix("app"))
	if err != nil {
		log.Fatal(err)
	}
	go func() { _ = runner.Run(ctx) }()

	// The query side: the active version's table, once the model is
	// servable and has applied pos.
	reader, err := projection.NewReaderOn(target, "app", store)
	if err != nil {
		log.Fatal(err)
	}
	var pos eventstore.Position // an append's result
	if err := reader.WaitFor(ctx, "wallets", pos); err != nil {
		log.Fatal(err)
	}
	ns, err := reader.Namespace(ctx, "wallets")
	if err != nil {
		log.Fatal(err) // a *projection.NotReadyError while not servable
	}
	var amount int64
	_ = pool.QueryRow(ctx, `SELECT amount FROM `+ns.Table("balance")+` WHERE wallet = $1`, "wallet-42").Scan(&amount)
}

// An inline projection is applied in the append's own transaction, so the
// read model shows a command's events the moment it commits; a runner on
// the same target (SharedWithInline) builds and rebuilds the model and
// applies what no Inline did.
func ExampleInline() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:5432/app")
	if err != nil {
		log.Fatal(err)
	}
	store, err := pgstore.New(ctx, pool, pgstore.WithAutoMigrate())
	if err != nil {
		log.Fatal(err)
	}
	reg := eventstore.NewRegistry()
	_ = eventstore.Register[WalletDeposited](reg, "wallet.Deposited")
	wallets := pgWallets(reg)
	target := projection.Postgres(pool, "eskit", projection.SharedWithInline())
	runner, err := projection.NewRunnerOn(target, store, []projection.Projection{wallets}, projection.WithPrefix("app"))
	if err != nil {
		log.Fatal(err)
	}
	go func() { _ = runner.Run(ctx) }()
	inline, err := projection.NewInline(target, "app", wallets)
	if err != nil {
		log.Fatal(err)
	}

	ev, _ := reg.Encode(WalletDeposited{Amount: 100}, nil)
	var after func(context.Context)
	err = store.InTx(ctx, func(tx pgx.Tx) error {
		recs, _, err := store.AppendTxRecords(ctx, tx, eventstore.StreamAppend{
			StreamID: "wallet-42", Expected: eventstore.Any, Events: []eventstore.Event{ev}})
		if err != nil {
			return err
		}
		after, err = inline.Apply(ctx, tx, recs)
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
	after(ctx) // the projection's side effects, once committed
}
