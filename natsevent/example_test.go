package natsevent_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/natsevent"
)

// Every event travels on a subject made of the prefix, the stream's
// bucket, its type (the stream ID up to the first "-"), the stream ID and
// the event type; tokens are escaped, so no ID can add tokens or wildcards.
func ExampleSubject() {
	fmt.Println(natsevent.Subject("bank", "account-42", "Deposited"))
	subject := natsevent.Subject("bank", "order-7.v2 *", "Placed")
	fmt.Println(subject)

	p, err := natsevent.ParseSubject(subject)
	fmt.Printf("%q %q %q %v\n", p.Category, p.StreamID, p.EventType, err)
	// Output:
	// bank.c5.account.account-42.Deposited
	// bank.21.order.order-7~2ev2~20~2a.Placed
	// "order" "order-7.v2 *" "Placed" <nil>
}

// Filters select what a consumer receives: one stream, one stream type, one
// event type, or the buckets of one partition.
func ExampleStreamFilter() {
	fmt.Println(natsevent.StreamFilter("bank", "account-42"))
	fmt.Println(natsevent.CategoryFilter("bank", "account"))
	fmt.Println(natsevent.EventTypeFilter("bank", "Deposited"))

	filters, _ := natsevent.PartitionFilters("bank", 0, 128) // 256 buckets over 128 partitions
	fmt.Println(filters)
	// Output:
	// bank.c5.account.account-42.*
	// bank.*.account.>
	// bank.*.*.*.Deposited
	// [bank.00.> bank.80.>]
}

// A record becomes a NATS message and back, exactly: the relay publishes
// NewMsg, consumers call DecodeMsg.
func ExampleDecodeMsg() {
	rec := eventstore.Record{
		Event: eventstore.Event{
			ID:       uuid.MustParse("0190f0c0-0000-7000-8000-000000000001"),
			Type:     "Deposited",
			Data:     []byte(`{"amount":100}`),
			Metadata: eventstore.Metadata{eventstore.MetaCorrelationID: "req: 7"},
		},
		StreamID:   "account-42",
		Version:    3,
		Position:   eventstore.Position{Tx: 812, Seq: 40},
		RecordedAt: time.Date(2026, 12, 1, 9, 30, 0, 0, time.UTC),
	}
	msg := natsevent.NewMsg("bank", rec)
	fmt.Println(msg.Subject, msg.Header.Get(natsevent.HeaderMsgID))

	got, err := natsevent.DecodeMsg(msg.Subject, msg.Header, msg.Data)
	fmt.Println(got.StreamID, got.Version, got.Position, got.Metadata[eventstore.MetaCorrelationID], err)
	// Output:
	// bank.c5.account.account-42.Deposited 0190f0c0-0000-7000-8000-000000000001
	// account-42 3 812-40 req: 7 <nil>
}

// Check what the server supports before relying on it: old servers ignore
// settings they do not know instead of refusing them.
func ExampleCheckServer() {
	fmt.Println(natsevent.CheckServer("2.10.14", natsevent.FeatureMultiFilter))
	err := natsevent.CheckServer("2.9.10", natsevent.FeatureMultiFilter)
	fmt.Println(errors.Is(err, natsevent.ErrUnsupported))
	// Output:
	// <nil>
	// true
}
