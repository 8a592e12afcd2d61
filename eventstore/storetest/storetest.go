// Package storetest is the conformance suite every eskit event store must
// pass. It is exported so that third-party stores can run it:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, storetest.Harness{New: func(t *testing.T) eventstore.Store { ... }})
//	}
//
// The suite assumes nothing about a store beyond the eventstore contract: it
// compares Positions only by their order and equality, and it waits for the
// feed (ReadAll, Head, Subscribe) to catch up with an append instead of
// expecting it to be visible at once, since a gap-safe feed may trail
// commits briefly. Each top-level subtest makes one store, so the suite
// stays fast against a real database.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/eskit/eskit/eventstore"
)

// Harness tells the suite how to make and drive the store under test.
type Harness struct {
	// New returns a fresh, empty store for one test; it registers its own
	// clean-up with t.Cleanup.
	New func(t *testing.T) eventstore.Store
	// AppendAndRollback, when set, performs the appends inside a
	// transaction and rolls it back instead of committing. The suite uses
	// it to check that feed readers never see rolled-back events. Stores
	// without transactions leave it nil.
	AppendAndRollback func(ctx context.Context, s eventstore.Store, appends ...eventstore.StreamAppend) error
	// Limits are the append limits the store enforces (zero fields mean
	// the eventstore defaults). The suite checks oversized input against
	// them.
	Limits eventstore.Limits
}

// Run runs the whole suite against the harness's store, one subtest per
// area, each on a fresh store from Harness.New:
//
//   - ExpectedVersion: every condition on new and existing streams;
//     conflicts are *eventstore.ConcurrencyError values with the details.
//   - AppendMulti: one failing condition writes nothing; success reports
//     each stream's version in order and the Position of the last event.
//   - Idempotency: an exact repeat is answered Duplicate with the original
//     result (also when raced), reused IDs elsewhere are ErrDuplicateEvent,
//     zero IDs are assigned.
//   - ReadStream, ReadAll, EarlyBreak: the reads, paging, Head, missing
//     streams and events, and iterators that stop when the consumer does.
//   - Validation, StreamIDs: malformed appends fail with ErrInvalidArgument
//     and write nothing; unusual stream IDs round-trip.
//   - SameStreamRace, FeedUnderLoad: concurrent writers on one stream and
//     on many, while feed readers (Subscribe and ReadAll) must see every
//     committed event exactly once and in order, and no rolled-back one.
//   - Subscribe: history then live records, start positions, cancellation.
//   - Model: a pgregory.net/rapid state machine comparing random appends
//     and reads with an in-memory model (its size follows -rapid.checks).
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.New == nil {
		t.Fatal("storetest: Harness.New is nil")
	}
	t.Run("ExpectedVersion", h.testExpectedVersion)
	t.Run("AppendMulti", h.testAppendMulti)
	t.Run("Idempotency", h.testIdempotency)
	t.Run("ReadStream", h.testReadStream)
	t.Run("ReadAll", h.testReadAll)
	t.Run("EarlyBreak", h.testEarlyBreak)
	t.Run("Validation", h.testValidation)
	t.Run("StreamIDs", h.testStreamIDs)
	t.Run("SameStreamRace", h.testSameStreamRace)
	t.Run("FeedUnderLoad", h.testFeedUnderLoad)
	t.Run("Subscribe", h.testSubscribe)
	t.Run("Model", h.testModel)
}

// defaultTimeout bounds every subtest, so a store that hangs fails instead
// of blocking the test binary until its global timeout.
const defaultTimeout = 2 * time.Minute

// newStore returns a fresh store and a context that ends with the test.
func (h Harness) newStore(t *testing.T) (context.Context, eventstore.Store) {
	t.Helper()
	s := h.New(t)
	if s == nil {
		t.Fatal("storetest: Harness.New returned nil")
	}
	ctx, cancel := context.WithTimeout(t.Context(), defaultTimeout)
	t.Cleanup(cancel)
	return ctx, s
}

// tb is the part of testing.TB and rapid.TB the suite's helpers use.
type tb interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// newEvent returns an event with a fresh ID, the type and the payload.
func newEvent(typ, data string) eventstore.Event {
	return eventstore.Event{ID: eventstore.NewEventID(), Type: typ, Data: []byte(data)}
}

// newEvents returns n events of the type whose payloads name tag and their
// index.
func newEvents(n int, tag string) []eventstore.Event {
	evs := make([]eventstore.Event, n)
	for i := range evs {
		evs[i] = eventstore.Event{
			ID:       eventstore.NewEventID(),
			Type:     "Test" + tag,
			Data:     fmt.Appendf(nil, `{"tag":%q,"i":%d}`, tag, i),
			Metadata: eventstore.Metadata{"i": fmt.Sprint(i), eventstore.MetaCorrelationID: tag},
		}
	}
	return evs
}

// collect drains an iterator, failing the test on an error.
func collect(t tb, seq func(func(eventstore.Record, error) bool)) []eventstore.Record {
	t.Helper()
	recs, err := eventstore.Collect(seq)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return recs
}

// sameEvent reports how a stored event differs from the appended one, or "".
func sameEvent(want eventstore.Event, got eventstore.Event) string {
	switch {
	case got.ID != want.ID:
		return fmt.Sprintf("ID %s, want %s", got.ID, want.ID)
	case got.Type != want.Type:
		return fmt.Sprintf("type %q, want %q", got.Type, want.Type)
	case !bytes.Equal(got.Data, want.Data):
		return fmt.Sprintf("data %q, want %q", got.Data, want.Data)
	case len(got.Metadata) != len(want.Metadata) || (len(want.Metadata) > 0 && !maps.Equal(got.Metadata, want.Metadata)):
		return fmt.Sprintf("metadata %v, want %v", got.Metadata, want.Metadata)
	}
	return ""
}

// checkRecords asserts that recs are exactly the events of one stream with
// the given versions, in order.
func checkRecords(t tb, stream string, want []eventstore.Event, versions []int64, recs []eventstore.Record) {
	t.Helper()
	if len(recs) != len(want) {
		t.Fatalf("stream %q: got %d records, want %d", stream, len(recs), len(want))
	}
	for i, r := range recs {
		if d := sameEvent(want[i], r.Event); d != "" {
			t.Errorf("stream %q record %d: %s", stream, i, d)
		}
		if r.StreamID != stream {
			t.Errorf("stream %q record %d: StreamID %q", stream, i, r.StreamID)
		}
		if r.Version != versions[i] {
			t.Errorf("stream %q record %d: version %d, want %d", stream, i, r.Version, versions[i])
		}
		if r.RecordedAt.IsZero() {
			t.Errorf("stream %q record %d: RecordedAt not set", stream, i)
		}
		if r.Position.IsZero() {
			t.Errorf("stream %q record %d: zero Position", stream, i)
		}
	}
}

// versionRange returns from, from+1, ..., to (descending when from > to).
func versionRange(from, to int64) []int64 {
	var vs []int64
	if from <= to {
		for v := from; v <= to; v++ {
			vs = append(vs, v)
		}
		return vs
	}
	for v := from; v >= to; v-- {
		vs = append(vs, v)
	}
	return vs
}

// reversed returns a reversed copy of s.
func reversed[T any](s []T) []T {
	out := make([]T, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}

// waitFeed waits until the feed's Head reaches pos: a gap-safe feed may
// trail commits while other transactions are in flight.
func waitFeed(ctx context.Context, t tb, s eventstore.FeedReader, pos eventstore.Position) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	delay := time.Millisecond
	for {
		head, err := s.Head(ctx)
		if err != nil {
			t.Fatalf("Head: %v", err)
		}
		if !head.Before(pos) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("feed head %s did not reach %s: %v", head, pos, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}

// readFeed reads every record after pos up to and including until, in
// pages of limit, checking that Positions strictly increase and that no
// page is longer than limit.
func readFeed(ctx context.Context, t tb, s eventstore.FeedReader, after, until eventstore.Position, limit int) []eventstore.Record {
	t.Helper()
	waitFeed(ctx, t, s, until)
	var out []eventstore.Record
	pos := after
	for pos.Before(until) {
		page, err := s.ReadAll(ctx, pos, limit)
		if err != nil {
			t.Fatalf("ReadAll(%s, %d): %v", pos, limit, err)
		}
		if len(page) == 0 {
			t.Fatalf("ReadAll(%s, %d): empty page before head %s", pos, limit, until)
		}
		if len(page) > limit {
			t.Fatalf("ReadAll(%s, %d): %d records", pos, limit, len(page))
		}
		for _, r := range page {
			if !r.Position.After(pos) {
				t.Fatalf("ReadAll(%s): record at %s does not follow %s", after, r.Position, pos)
			}
			pos = r.Position
			if pos.After(until) {
				return out
			}
			out = append(out, r)
		}
	}
	return out
}

// fence appends one event to its own stream and returns the records the
// feed shows after the given position up to and including it: the records
// that other appends made visible in between. Tests use it to prove that a
// failed append wrote nothing.
func fence(ctx context.Context, t tb, s eventstore.Store, after eventstore.Position) []eventstore.Record {
	t.Helper()
	res, err := s.Append(ctx, "fence-"+eventstore.NewEventID().String()[24:], eventstore.NoStream, newEvent("Fence", "{}"))
	if err != nil {
		t.Fatalf("fence append: %v", err)
	}
	recs := readFeed(ctx, t, s, after, res.Position, 100)
	if len(recs) == 0 || recs[len(recs)-1].Position != res.Position {
		t.Fatalf("fence: feed does not end with the fence event at %s", res.Position)
	}
	return recs[:len(recs)-1]
}

// mark appends one event to its own stream, waits until the feed shows it
// and returns its Position: every append that committed earlier is visible
// at or before it, and every later one will appear after it.
func mark(ctx context.Context, t tb, s eventstore.Store) eventstore.Position {
	t.Helper()
	res, err := s.Append(ctx, "mark-"+eventstore.NewEventID().String()[24:], eventstore.NoStream, newEvent("Mark", "{}"))
	if err != nil {
		t.Fatalf("mark append: %v", err)
	}
	waitFeed(ctx, t, s, res.Position)
	return res.Position
}

// head returns the store's Head, failing the test on error.
func head(ctx context.Context, t tb, s eventstore.FeedReader) eventstore.Position {
	t.Helper()
	p, err := s.Head(ctx)
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	return p
}

// append1 appends and fails the test on error.
func append1(ctx context.Context, t tb, s eventstore.Store, stream string, expected eventstore.ExpectedVersion, evs ...eventstore.Event) eventstore.AppendResult {
	t.Helper()
	res, err := s.Append(ctx, stream, expected, evs...)
	if err != nil {
		t.Fatalf("Append(%q, %s): %v", stream, expected, err)
	}
	return res
}

// streamVersion returns a stream's version, 0 when it does not exist.
func streamVersion(ctx context.Context, t tb, s eventstore.StreamReader, stream string) int64 {
	t.Helper()
	v, err := s.StreamVersion(ctx, stream)
	if errors.Is(err, eventstore.ErrStreamNotFound) {
		return 0
	}
	if err != nil {
		t.Fatalf("StreamVersion(%q): %v", stream, err)
	}
	return v
}

// checkConflict asserts that err is a *ConcurrencyError with the details.
func checkConflict(t tb, err error, stream string, expected eventstore.ExpectedVersion, actual int64) {
	t.Helper()
	if !errors.Is(err, eventstore.ErrConcurrency) {
		t.Fatalf("stream %q expected %s: got error %v, want a concurrency conflict", stream, expected, err)
	}
	var ce *eventstore.ConcurrencyError
	if !errors.As(err, &ce) {
		t.Fatalf("stream %q: error %v (%T) is not a *eventstore.ConcurrencyError", stream, err, err)
	}
	if ce.Stream != stream || ce.Expected != expected || ce.Actual != actual {
		t.Fatalf("conflict = {Stream %q, Expected %s, Actual %d}, want {%q, %s, %d}",
			ce.Stream, ce.Expected, ce.Actual, stream, expected, actual)
	}
	if !eventstore.IsRetryable(err) {
		t.Fatalf("conflict %v is not retryable", err)
	}
}
