package memstore_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/memstore"
)

func event(typ, data string) eventstore.Event {
	return eventstore.Event{Type: typ, Data: []byte(data)}
}

// Append to a stream, read it back, and read the global feed.
func Example() {
	ctx := context.Background()
	store := memstore.New()

	_, _ = store.Append(ctx, "account-1", eventstore.NoStream,
		event("Opened", `{"owner":"ann"}`), event("Deposited", `{"amount":100}`))
	res, err := store.Append(ctx, "account-2", eventstore.NoStream, event("Opened", `{"owner":"bob"}`))
	fmt.Println(res.Version(), res.Position, err)

	for rec, err := range store.ReadStream(ctx, "account-1", 1) {
		if err != nil {
			panic(err)
		}
		fmt.Println(rec.StreamID, rec.Version, rec.Type, string(rec.Data))
	}

	// The feed: every stream's records in commit order, after a position.
	feed, _ := store.ReadAll(ctx, eventstore.Position{}, 100)
	for _, rec := range feed {
		fmt.Println(rec.Position, rec.StreamID, rec.Type)
	}

	_, err = store.StreamVersion(ctx, "account-3")
	fmt.Println(errors.Is(err, eventstore.ErrStreamNotFound))
	// Output:
	// 1 2-3 <nil>
	// account-1 1 Opened {"owner":"ann"}
	// account-1 2 Deposited {"amount":100}
	// 1-1 account-1 Opened
	// 1-2 account-1 Deposited
	// 2-3 account-2 Opened
	// true
}

// AppendMulti writes to several streams atomically: when one condition
// fails, nothing is written.
func ExampleStore_AppendMulti() {
	ctx := context.Background()
	store := memstore.New()
	_, _ = store.Append(ctx, "account-1", eventstore.NoStream, event("Opened", `{}`))

	transfer := func(expectedFrom eventstore.ExpectedVersion) error {
		_, err := store.AppendMulti(ctx,
			eventstore.StreamAppend{StreamID: "account-1", Expected: expectedFrom, Events: []eventstore.Event{event("Debited", `{"amount":5}`)}},
			eventstore.StreamAppend{StreamID: "transfer-9", Expected: eventstore.NoStream, Events: []eventstore.Event{event("Requested", `{"amount":5}`)}},
		)
		return err
	}
	fmt.Println(errors.Is(transfer(eventstore.Exact(7)), eventstore.ErrConcurrency))
	_, err := store.StreamVersion(ctx, "transfer-9")
	fmt.Println("transfer written:", err == nil)

	fmt.Println(transfer(eventstore.Exact(1)))
	v, _ := store.StreamVersion(ctx, "transfer-9")
	fmt.Println("transfer version:", v)
	// Output:
	// true
	// transfer written: false
	// <nil>
	// transfer version: 1
}

// Events with IDs make an append idempotent: the same append again writes
// nothing and answers with the first result.
func ExampleStore_Append_idempotent() {
	ctx := context.Background()
	store := memstore.New()
	ev := event("Deposited", `{"amount":100}`)
	ev.ID = uuid.MustParse("0190f0c0-0000-7000-8000-000000000001")

	first, _ := store.Append(ctx, "account-1", eventstore.Any, ev)
	again, err := store.Append(ctx, "account-1", eventstore.Any, ev) // a retry after a timeout, say
	fmt.Println(first.Position, again.Position, again.Duplicate, err)

	// The same ID anywhere else is an error.
	_, err = store.Append(ctx, "account-2", eventstore.Any, ev)
	fmt.Println(errors.Is(err, eventstore.ErrDuplicateEvent))
	// Output:
	// 1-1 1-1 true <nil>
	// true
}

// Subscribe yields the history, then live records as they are appended,
// until its context ends.
func ExampleStore_Subscribe() {
	store := memstore.New()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = store.Append(ctx, "account-1", eventstore.NoStream, event("Opened", `{}`))

	go func() {
		_, _ = store.Append(ctx, "account-1", eventstore.Exact(1), event("Deposited", `{"amount":100}`))
	}()
	seen := 0
	for rec, err := range store.Subscribe(ctx, eventstore.Position{}) {
		if err != nil {
			panic(err)
		}
		fmt.Println(rec.Position, rec.Type)
		if seen++; seen == 2 {
			cancel() // or break
		}
	}
	// Output:
	// 1-1 Opened
	// 2-2 Deposited
}
