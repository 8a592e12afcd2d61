package outbox_test

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/memstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/internal/infra/embedded"
	"github.com/eskit/eskit/natsevent"
	"github.com/eskit/eskit/outbox"
)

// startNATS starts an in-process NATS server with JetStream for the
// examples to run against; a service connects to its NATS cluster.
func startNATS() *embedded.NATS {
	srv, err := embedded.StartNATS(embedded.NATSOptions{})
	if err != nil {
		panic(err)
	}
	return srv
}

// The relay publishes every event the store commits to JetStream, in feed
// order; any consumer of the stream receives them.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := startNATS()
	defer srv.Close()

	nc, err := nats.Connect(srv.URL(), outbox.ConnectOptions()...)
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := outbox.EnsureStream(ctx, js, outbox.StreamConfig{Prefix: "bank", Storage: jetstream.MemoryStorage}); err != nil {
		panic(err)
	}

	// The checkpoint and the leader election live in PostgreSQL (pass the
	// pool and leave WithCheckpoints out); this relay keeps them in memory.
	store := memstore.New()
	relay, err := outbox.NewRelay(store, nil, js, outbox.WithPrefix("bank"), outbox.WithName("bank"),
		outbox.WithCheckpoints(outbox.NewMemoryCheckpoints()))
	if err != nil {
		panic(err)
	}
	relayCtx, stopRelay := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- relay.Run(relayCtx) }()

	_, _ = store.Append(ctx, "account-42", eventstore.NoStream, eventstore.Event{Type: "Deposited", Data: []byte(`{"amount":100}`)})

	cons, _ := js.OrderedConsumer(ctx, "BANK", jetstream.OrderedConsumerConfig{})
	msg, err := cons.Next()
	if err != nil {
		panic(err)
	}
	rec, err := natsevent.DecodeMsg(msg.Subject(), msg.Headers(), msg.Data())
	fmt.Println(msg.Subject())
	fmt.Println(rec.StreamID, rec.Version, rec.Position, string(rec.Data), err)

	stopRelay()
	fmt.Println(<-stopped)
	// Output:
	// bank.c5.account.account-42.Deposited
	// account-42 1 1-1 {"amount":100} <nil>
	// <nil>
}

// EnsureStream never weakens a stream: settings an operator raised stay
// when a relay asks for less.
func ExampleEnsureStream() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := startNATS()
	defer srv.Close()
	nc, _ := nats.Connect(srv.URL())
	defer nc.Close()
	js, _ := jetstream.New(nc)

	// An operator keeps the events for 30 days.
	_, _ = outbox.EnsureStream(ctx, js, outbox.StreamConfig{Prefix: "bank", MaxAge: 30 * 24 * time.Hour})

	// A relay starts with the defaults (7 days, 2 minutes of de-duplication).
	stream, err := outbox.EnsureStream(ctx, js, outbox.StreamConfig{Prefix: "bank"})
	if err != nil {
		panic(err)
	}
	cfg := stream.CachedInfo().Config
	fmt.Println(cfg.Name, cfg.Subjects, cfg.MaxAge, cfg.Duplicates)
	// Output: BANK [bank.>] 720h0m0s 2m0s
}

// On PostgreSQL the relay's checkpoint and leader lock live in the store's
// database: run it in as many processes as you like, one leads.
func ExampleNewRelay() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:5432/postgres")
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	store, err := pgstore.New(ctx, pool, pgstore.WithAutoMigrate())
	if err != nil {
		panic(err)
	}
	defer store.Close()
	nc, err := nats.Connect("nats://127.0.0.1:4222", outbox.ConnectOptions()...)
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := outbox.EnsureStream(ctx, js, outbox.StreamConfig{Prefix: "bank"}); err != nil {
		panic(err)
	}

	relay, err := outbox.NewRelay(store, pool, js, outbox.WithPrefix("bank"), outbox.WithName("bank"))
	if err != nil {
		panic(err)
	}
	go func() {
		for range time.Tick(10 * time.Second) {
			st := relay.Stats()
			fmt.Println("leader:", st.Leader, "published:", st.Published, "lag:", st.LagEvents, st.Lag)
		}
	}()
	if err := relay.Run(ctx); err != nil { // until ctx ends
		panic(err)
	}
}
