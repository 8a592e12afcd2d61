package pgstore_test

import (
	"context"
	"fmt"
	"log"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
)

// These examples need a PostgreSQL server: they are compiled, not run.

// Open a store on your pool: the schema is migrated at start (or run
// pgstore.Migrate from a deploy step), then append and read.
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:5432/postgres")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	store, err := pgstore.New(ctx, pool, pgstore.WithSchema("eskit"), pgstore.WithAutoMigrate())
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close() // the pool stays yours

	res, err := store.Append(ctx, "account-42", eventstore.NoStream,
		eventstore.Event{Type: "Opened", Data: []byte(`{"owner":"ann"}`)})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Version(), res.Position) // 1 and a position such as 76186-1

	for rec, err := range store.ReadStream(ctx, "account-42", 1) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(rec.Version, rec.Type, string(rec.Data))
	}
}

// Migrations are embedded and versioned; run them from a deploy step and
// check them at start. Several processes may migrate at once.
func ExampleMigrationStatus() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:5432/postgres")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := pgstore.Migrate(ctx, pool, "eskit"); err != nil {
		log.Fatal(err)
	}
	st, err := pgstore.MigrationStatus(ctx, pool, "eskit")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(st.Applied), "applied, up to date:", st.UpToDate())
}

// Your own rows and the events commit together, or not at all: append
// inside your transaction.
func ExampleStore_InTx() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:5432/postgres")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	store, err := pgstore.New(ctx, pool)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	err = store.InTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO invoices (id, total) VALUES ($1, $2)`, "inv-7", 4200); err != nil {
			return err
		}
		_, err := store.AppendTx(ctx, tx, eventstore.StreamAppend{
			StreamID: "invoice-inv-7", Expected: eventstore.NoStream,
			Events: []eventstore.Event{{Type: "InvoiceIssued", Data: []byte(`{"total":4200}`)}},
		})
		return err // a *eventstore.ConcurrencyError: roll back and retry the whole transaction
	})
	if err != nil {
		log.Fatal(err)
	}
}

// Import bulk-loads new streams with COPY, all of them or none: a
// migration from another system, say.
func ExampleStore_Import() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:5432/postgres")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	store, err := pgstore.New(ctx, pool)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	var streams []eventstore.StreamAppend
	for i := range 10_000 {
		streams = append(streams, eventstore.StreamAppend{
			StreamID: fmt.Sprintf("legacy-%d", i),
			Events: []eventstore.Event{
				{Type: "Opened", Data: []byte(`{}`)},
				{Type: "Deposited", Data: []byte(`{"amount":100}`)},
			},
		})
	}
	res, err := store.Import(ctx, streams)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(res.Streams), "streams imported up to", res.Position)
}
