package storetest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/memstore"
	"github.com/eskit/eskit/eventstore/storetest"
)

// The in-memory store passes the conformance suite.
func TestMemstoreConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T) eventstore.Store { return memstore.New() },
	})
}

func TestMemstoreConformanceWithLimits(t *testing.T) {
	limits := eventstore.Limits{MaxStreamIDLength: 40, MaxEventTypeLength: 80, MaxEventSize: 4096}
	h := storetest.Harness{
		New:    func(t *testing.T) eventstore.Store { return memstore.New(memstore.WithLimits(limits)) },
		Limits: limits,
	}
	storetest.Run(t, h)
}

func TestClock(t *testing.T) {
	at := time.Date(2024, 2, 29, 12, 0, 0, 0, time.FixedZone("X", 3600))
	s := memstore.New(memstore.WithClock(func() time.Time { return at }))
	ctx := t.Context()
	if _, err := s.Append(ctx, "s", eventstore.NoStream, eventstore.Event{Type: "T", Data: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	recs, err := eventstore.Collect(s.ReadStream(ctx, "s", 1))
	if err != nil || len(recs) != 1 {
		t.Fatalf("ReadStream: %d records, %v", len(recs), err)
	}
	if !recs[0].RecordedAt.Equal(at) || recs[0].RecordedAt.Location() != time.UTC {
		t.Fatalf("RecordedAt = %s, want %s in UTC", recs[0].RecordedAt, at)
	}
}

func TestStoredCopies(t *testing.T) {
	s := memstore.New()
	ctx := t.Context()
	ev := eventstore.Event{Type: "T", Data: []byte("abc"), Metadata: eventstore.Metadata{"k": "v"}}
	if _, err := s.Append(ctx, "s", eventstore.NoStream, ev); err != nil {
		t.Fatal(err)
	}
	ev.Data[0] = 'X'
	ev.Metadata["k"] = "changed"
	recs, err := eventstore.Collect(s.ReadStream(ctx, "s", 1))
	if err != nil {
		t.Fatal(err)
	}
	if string(recs[0].Data) != "abc" || recs[0].Metadata["k"] != "v" {
		t.Fatalf("the store kept the caller's buffers: data %q, metadata %v", recs[0].Data, recs[0].Metadata)
	}
}

func TestClosedContext(t *testing.T) {
	s := memstore.New()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Append(ctx, "s", eventstore.Any, eventstore.Event{Type: "T", Data: []byte("1")}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with a cancelled context: %v", err)
	}
	if _, err := s.ReadAll(ctx, eventstore.Position{}, 10); !errors.Is(err, context.Canceled) {
		t.Fatalf("ReadAll with a cancelled context: %v", err)
	}
}

func TestFeedLag(t *testing.T) {
	lag, err := memstore.New().FeedLag(t.Context())
	if err != nil || lag != (eventstore.FeedLag{}) {
		t.Fatalf("FeedLag = %+v, %v", lag, err)
	}
}
