package eventstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/memstore"
)

// AccountOpened is an event payload; it is stored as JSON under the name
// it is registered with.
type AccountOpened struct {
	Owner    string `json:"owner"`
	Currency string `json:"currency"`
}

// Deposited is another event of the same stream.
type Deposited struct {
	Amount int64 `json:"amount"`
}

// The registry turns Go values into events to append and records back into
// Go values.
func ExampleRegistry() {
	reg := eventstore.NewRegistry()
	if err := errors.Join(
		eventstore.Register[AccountOpened](reg, "bank.AccountOpened"),
		eventstore.Register[Deposited](reg, "bank.Deposited"),
	); err != nil {
		panic(err)
	}

	ev, _ := reg.Encode(Deposited{Amount: 100}, eventstore.Metadata{eventstore.MetaCorrelationID: "req-1"})
	fmt.Println(ev.Type, string(ev.Data), ev.Metadata[eventstore.MetaCorrelationID])

	// What a store returns is a Record: the event plus where it is stored.
	rec := eventstore.Record{Event: ev, StreamID: "account-42", Version: 2}
	v, _ := eventstore.DecodeAs[Deposited](reg, rec)
	fmt.Println(v.Amount)

	_, err := reg.Decode(eventstore.Record{Event: eventstore.Event{Type: "bank.Closed", Data: []byte("{}")}, StreamID: "account-42", Version: 3})
	var unknown *eventstore.UnknownEventTypeError
	fmt.Println(errors.As(err, &unknown), unknown.Type)
	// Output:
	// bank.Deposited {"amount":100} req-1
	// 100
	// true bank.Closed
}

// OwnerRenamed is at its second schema version: version 1 had a single
// "name" field, version 2 splits it.
type OwnerRenamed struct {
	Given  string `json:"given"`
	Family string `json:"family"`
}

// An upcaster keeps old payloads readable: events stored at schema
// version 1 are turned into version 2 on every read, never rewritten.
func ExampleUpcast() {
	reg := eventstore.NewRegistry()
	err := eventstore.Register[OwnerRenamed](reg, "bank.OwnerRenamed",
		eventstore.SchemaVersion(2),
		eventstore.Upcast(1, func(v1 []byte) ([]byte, error) {
			// {"name":"Ann Smith"} -> {"given":"Ann","family":"Smith"}
			var old struct{ Name string }
			if err := json.Unmarshal(v1, &old); err != nil {
				return nil, err
			}
			given, family, _ := strings.Cut(old.Name, " ")
			return json.Marshal(OwnerRenamed{Given: given, Family: family})
		}))
	if err != nil {
		panic(err)
	}

	// An event written by the previous version of the program.
	old := eventstore.Record{StreamID: "account-42", Version: 7, Event: eventstore.Event{
		Type:     "bank.OwnerRenamed",
		Data:     []byte(`{"name":"Ann Smith"}`),
		Metadata: eventstore.Metadata{eventstore.MetaSchemaVersion: "1"},
	}}
	v, err := eventstore.DecodeAs[OwnerRenamed](reg, old)
	fmt.Printf("%+v %v\n", v, err)

	// New events are written at version 2.
	ev, _ := reg.Encode(OwnerRenamed{Given: "Ann", Family: "Jones"}, nil)
	fmt.Println(ev.Metadata[eventstore.MetaSchemaVersion], string(ev.Data))
	// Output:
	// {Given:Ann Family:Smith} <nil>
	// 2 {"given":"Ann","family":"Jones"}
}

// A Position travels as a string: hand it to a client as a consistency
// token and compare it with another when it comes back.
func ExampleParsePosition() {
	token := eventstore.Position{Tx: 76186, Seq: 2}.String()
	fmt.Println(token)

	pos, err := eventstore.ParsePosition(token)
	fmt.Println(pos.Tx, pos.Seq, err)
	fmt.Println(pos.Before(eventstore.Position{Tx: 76190, Seq: 1}), pos.After(eventstore.Position{}))

	_, err = eventstore.ParsePosition("yesterday")
	fmt.Println(errors.Is(err, eventstore.ErrInvalidArgument))
	// Output:
	// 76186-2
	// 76186 2 <nil>
	// true true
	// true
}

// An expected version makes an append conditional: a writer that decided
// on an older version of the stream gets a ConcurrencyError, reloads and
// decides again.
func ExampleExact() {
	ctx := context.Background()
	store := memstore.New()
	reg := eventstore.NewRegistry()
	_ = eventstore.Register[Deposited](reg, "bank.Deposited")
	ev, _ := reg.Encode(Deposited{Amount: 10}, nil)

	res, err := store.Append(ctx, "account-42", eventstore.NoStream, ev)
	fmt.Println(res.Version(), err)

	// Another writer appended in between: version 1 is stale.
	_, _ = store.Append(ctx, "account-42", eventstore.Exact(1), ev)
	_, err = store.Append(ctx, "account-42", eventstore.Exact(1), ev)
	var conflict *eventstore.ConcurrencyError
	if errors.As(err, &conflict) {
		fmt.Println(errors.Is(err, eventstore.ErrConcurrency), conflict.Stream, conflict.Actual)
	}
	// Output:
	// 1 <nil>
	// true account-42 2
}
