package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/eskit/eskit/eventstore"
)

func (h Harness) testExpectedVersion(t *testing.T) {
	ctx, s := h.newStore(t)

	t.Run("NewStream", func(t *testing.T) {
		for _, tc := range []struct {
			name     string
			expected eventstore.ExpectedVersion
			ok       bool
		}{
			{"Any", eventstore.Any, true},
			{"NoStream", eventstore.NoStream, true},
			{"Exact0", eventstore.Exact(0), true},
			{"StreamExists", eventstore.StreamExists, false},
			{"Exact1", eventstore.Exact(1), false},
			{"Exact7", eventstore.Exact(7), false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				stream := "new-" + tc.name
				evs := newEvents(2, tc.name)
				res, err := s.Append(ctx, stream, tc.expected, evs...)
				if !tc.ok {
					checkConflict(t, err, stream, tc.expected, 0)
					if v := streamVersion(ctx, t, s, stream); v != 0 {
						t.Fatalf("failed append left the stream at version %d", v)
					}
					return
				}
				if err != nil {
					t.Fatalf("Append: %v", err)
				}
				if res.Duplicate || len(res.Streams) != 1 || res.Streams[0] != (eventstore.StreamResult{StreamID: stream, Version: 2}) || res.Version() != 2 {
					t.Fatalf("result %+v, want stream %q at version 2", res, stream)
				}
				recs := collect(t, s.ReadStream(ctx, stream, 1))
				checkRecords(t, stream, evs, []int64{1, 2}, recs)
				if recs[1].Position != res.Position {
					t.Fatalf("result Position %s, last record at %s", res.Position, recs[1].Position)
				}
			})
		}
	})

	t.Run("ExistingStream", func(t *testing.T) {
		const stream = "existing"
		append1(ctx, t, s, stream, eventstore.NoStream, newEvents(2, "setup")...)
		version := int64(2)
		for _, tc := range []struct {
			name     string
			expected func(v int64) eventstore.ExpectedVersion
			ok       bool
		}{
			{"Any", func(int64) eventstore.ExpectedVersion { return eventstore.Any }, true},
			{"StreamExists", func(int64) eventstore.ExpectedVersion { return eventstore.StreamExists }, true},
			{"ExactCurrent", eventstore.Exact, true},
			{"NoStream", func(int64) eventstore.ExpectedVersion { return eventstore.NoStream }, false},
			{"ExactStale", func(v int64) eventstore.ExpectedVersion { return eventstore.Exact(v - 1) }, false},
			{"ExactAhead", func(v int64) eventstore.ExpectedVersion { return eventstore.Exact(v + 1) }, false},
			{"ExactOne", func(int64) eventstore.ExpectedVersion { return eventstore.Exact(1) }, false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				expected := tc.expected(version)
				evs := newEvents(3, tc.name)
				before := mark(ctx, t, s)
				res, err := s.Append(ctx, stream, expected, evs...)
				if !tc.ok {
					checkConflict(t, err, stream, expected, version)
					if v := streamVersion(ctx, t, s, stream); v != version {
						t.Fatalf("failed append moved the stream from version %d to %d", version, v)
					}
					if leaked := fence(ctx, t, s, before); len(leaked) != 0 {
						t.Fatalf("failed append wrote %d records to the feed", len(leaked))
					}
					return
				}
				if err != nil {
					t.Fatalf("Append(%s) at version %d: %v", expected, version, err)
				}
				if res.Version() != version+3 || res.Duplicate {
					t.Fatalf("result %+v, want version %d", res, version+3)
				}
				recs := collect(t, s.ReadStream(ctx, stream, version+1))
				checkRecords(t, stream, evs, versionRange(version+1, version+3), recs)
				version += 3
			})
		}
		if v := streamVersion(ctx, t, s, stream); v != version {
			t.Fatalf("StreamVersion = %d, want %d", v, version)
		}
	})
}

func (h Harness) testAppendMulti(t *testing.T) {
	ctx, s := h.newStore(t)
	append1(ctx, t, s, "multi-a", eventstore.NoStream, newEvents(1, "a0")...)
	append1(ctx, t, s, "multi-d", eventstore.NoStream, newEvents(2, "d0")...)

	t.Run("OneConditionFails", func(t *testing.T) {
		for i, failing := range []int{0, 1, 2, 3} {
			appends := []eventstore.StreamAppend{
				{StreamID: "multi-a", Expected: eventstore.Exact(1), Events: newEvents(2, "a")},
				{StreamID: "multi-b", Expected: eventstore.NoStream, Events: newEvents(1, "b")},
				{StreamID: "multi-c", Expected: eventstore.Any, Events: newEvents(3, "c")},
				{StreamID: "multi-d", Expected: eventstore.StreamExists, Events: newEvents(1, "d")},
			}
			var wantActual int64
			switch failing {
			case 0:
				appends[0].Expected, wantActual = eventstore.Exact(5), 1
			case 1:
				appends[1].Expected, wantActual = eventstore.StreamExists, 0
			case 2:
				appends[2].Expected, wantActual = eventstore.Exact(2), 0
			case 3:
				appends[3].Expected, wantActual = eventstore.NoStream, 2
			}
			before := mark(ctx, t, s)
			_, err := s.AppendMulti(ctx, appends...)
			checkConflict(t, err, appends[failing].StreamID, appends[failing].Expected, wantActual)
			for stream, want := range map[string]int64{"multi-a": 1, "multi-b": 0, "multi-c": 0, "multi-d": 2} {
				if v := streamVersion(ctx, t, s, stream); v != want {
					t.Fatalf("case %d: failed AppendMulti left %q at version %d, want %d", i, stream, v, want)
				}
			}
			if leaked := fence(ctx, t, s, before); len(leaked) != 0 {
				t.Fatalf("case %d: failed AppendMulti wrote %d records to the feed", i, len(leaked))
			}
		}
	})

	t.Run("Success", func(t *testing.T) {
		appends := []eventstore.StreamAppend{
			{StreamID: "multi-d", Expected: eventstore.Exact(2), Events: newEvents(1, "d")},
			{StreamID: "multi-a", Expected: eventstore.Exact(1), Events: newEvents(2, "a")},
			{StreamID: "multi-c", Expected: eventstore.Any, Events: newEvents(3, "c")},
			{StreamID: "multi-b", Expected: eventstore.NoStream, Events: newEvents(1, "b")},
		}
		before := mark(ctx, t, s)
		res, err := s.AppendMulti(ctx, appends...)
		if err != nil {
			t.Fatalf("AppendMulti: %v", err)
		}
		want := []eventstore.StreamResult{{StreamID: "multi-d", Version: 3}, {StreamID: "multi-a", Version: 3}, {StreamID: "multi-c", Version: 3}, {StreamID: "multi-b", Version: 1}}
		if res.Duplicate || fmt.Sprint(res.Streams) != fmt.Sprint(want) {
			t.Fatalf("result streams %v (duplicate %v), want %v", res.Streams, res.Duplicate, want)
		}
		var maxPos eventstore.Position
		for i, a := range appends {
			recs := collect(t, s.ReadStream(ctx, a.StreamID, want[i].Version-int64(len(a.Events))+1))
			checkRecords(t, a.StreamID, a.Events, versionRange(want[i].Version-int64(len(a.Events))+1, want[i].Version), recs)
			for _, r := range recs {
				if r.Position.After(maxPos) {
					maxPos = r.Position
				}
			}
		}
		lastAppend := appends[len(appends)-1]
		last, err := s.ReadEvent(ctx, lastAppend.Events[len(lastAppend.Events)-1].ID)
		if err != nil {
			t.Fatalf("ReadEvent: %v", err)
		}
		if res.Position != last.Position || res.Position != maxPos {
			t.Fatalf("result Position %s; last event at %s; latest record at %s", res.Position, last.Position, maxPos)
		}
		feed := fence(ctx, t, s, before)
		if len(feed) != 7 {
			t.Fatalf("feed shows %d new records, want 7", len(feed))
		}
		if feed[6].Position != res.Position {
			t.Fatalf("feed ends at %s, result Position is %s", feed[6].Position, res.Position)
		}
	})
}

func (h Harness) testIdempotency(t *testing.T) {
	ctx, s := h.newStore(t)
	evs := newEvents(2, "idem")
	first := append1(ctx, t, s, "idem-1", eventstore.NoStream, evs...)
	other := append1(ctx, t, s, "idem-2", eventstore.NoStream, newEvents(1, "other")...)

	checkDuplicate := func(t *testing.T, res eventstore.AppendResult, err error, want eventstore.AppendResult) {
		t.Helper()
		if err != nil {
			t.Fatalf("repeated append: %v", err)
		}
		if !res.Duplicate {
			t.Fatalf("repeated append: Duplicate = false")
		}
		if fmt.Sprint(res.Streams) != fmt.Sprint(want.Streams) || res.Position != want.Position {
			t.Fatalf("repeated append: result %+v, want the original %+v", res, want)
		}
	}

	t.Run("SameAppend", func(t *testing.T) {
		before := mark(ctx, t, s)
		// The repeat carries the original (now stale) condition, as a
		// retried command would.
		for _, expected := range []eventstore.ExpectedVersion{eventstore.NoStream, eventstore.Any, eventstore.Exact(7), eventstore.StreamExists} {
			res, err := s.Append(ctx, "idem-1", expected, evs...)
			checkDuplicate(t, res, err, first)
		}
		if leaked := fence(ctx, t, s, before); len(leaked) != 0 {
			t.Fatalf("repeated append wrote %d records", len(leaked))
		}
		if v := streamVersion(ctx, t, s, "idem-1"); v != 2 {
			t.Fatalf("stream at version %d after repeats, want 2", v)
		}
	})

	t.Run("SameIDsOtherRequest", func(t *testing.T) {
		// The same event IDs with another type or payload are another
		// request reusing the IDs: refused, never answered as a repeat.
		// Metadata may differ (a retry carries new trace context).
		before := mark(ctx, t, s)
		otherData := slices.Clone(evs)
		otherData[1].Data = []byte(`{"n":"different"}`)
		otherType := slices.Clone(evs)
		otherType[0].Type = evs[0].Type + "Other"
		for name, changed := range map[string][]eventstore.Event{"payload": otherData, "type": otherType} {
			_, err := s.Append(ctx, "idem-1", eventstore.Any, changed...)
			if !errors.Is(err, eventstore.ErrDuplicateEvent) {
				t.Fatalf("re-append with another %s: err %v, want ErrDuplicateEvent", name, err)
			}
		}
		withMeta := slices.Clone(evs)
		withMeta[0].Metadata = eventstore.Metadata{"retry": "yes"}
		res, err := s.Append(ctx, "idem-1", eventstore.Any, withMeta...)
		checkDuplicate(t, res, err, first)
		if leaked := fence(ctx, t, s, before); len(leaked) != 0 {
			t.Fatalf("refused re-appends wrote %d records", len(leaked))
		}
	})

	t.Run("AfterLaterAppends", func(t *testing.T) {
		append1(ctx, t, s, "idem-1", eventstore.Exact(2), newEvents(3, "later")...)
		res, err := s.Append(ctx, "idem-1", eventstore.NoStream, evs...)
		checkDuplicate(t, res, err, first)
		if v := streamVersion(ctx, t, s, "idem-1"); v != 5 {
			t.Fatalf("stream at version %d, want 5", v)
		}
	})

	t.Run("SameMulti", func(t *testing.T) {
		appends := []eventstore.StreamAppend{
			{StreamID: "idem-m2", Expected: eventstore.NoStream, Events: newEvents(2, "m2")},
			{StreamID: "idem-m1", Expected: eventstore.NoStream, Events: newEvents(3, "m1")},
		}
		orig, err := s.AppendMulti(ctx, appends...)
		if err != nil {
			t.Fatalf("AppendMulti: %v", err)
		}
		before := mark(ctx, t, s)
		res, err := s.AppendMulti(ctx, appends...)
		checkDuplicate(t, res, err, orig)
		if leaked := fence(ctx, t, s, before); len(leaked) != 0 {
			t.Fatalf("repeated AppendMulti wrote %d records", len(leaked))
		}
	})

	t.Run("Conflicts", func(t *testing.T) {
		before := mark(ctx, t, s)
		mixed := append([]eventstore.Event{evs[0]}, newEvents(1, "new")...)
		for _, tc := range []struct {
			name    string
			appends []eventstore.StreamAppend
		}{
			{"OtherStream", []eventstore.StreamAppend{{StreamID: "idem-x", Expected: eventstore.Any, Events: evs}}},
			{"OneIDOtherStream", []eventstore.StreamAppend{{StreamID: "idem-2", Expected: eventstore.Any, Events: evs[:1]}}},
			{"WithNewEvent", []eventstore.StreamAppend{{StreamID: "idem-1", Expected: eventstore.Any, Events: mixed}}},
			{"Reordered", []eventstore.StreamAppend{{StreamID: "idem-1", Expected: eventstore.Any, Events: reversed(evs)}}},
			{"MultiWithNewStream", []eventstore.StreamAppend{
				{StreamID: "idem-1", Expected: eventstore.Any, Events: evs},
				{StreamID: "idem-y", Expected: eventstore.Any, Events: newEvents(1, "y")},
			}},
			{"MultiExistingStream", []eventstore.StreamAppend{
				{StreamID: "idem-1", Expected: eventstore.Any, Events: evs},
				{StreamID: "idem-2", Expected: eventstore.Any, Events: newEvents(1, "z")},
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				res, err := s.AppendMulti(ctx, tc.appends...)
				if !errors.Is(err, eventstore.ErrDuplicateEvent) {
					t.Fatalf("got result %+v, error %v; want ErrDuplicateEvent", res, err)
				}
				var de *eventstore.DuplicateEventError
				if errors.As(err, &de) && de.EventID == uuid.Nil {
					t.Fatalf("DuplicateEventError without an EventID: %v", err)
				}
			})
		}
		if leaked := fence(ctx, t, s, before); len(leaked) != 0 {
			t.Fatalf("rejected appends wrote %d records", len(leaked))
		}
		if v := streamVersion(ctx, t, s, "idem-2"); v != other.Version() {
			t.Fatalf("stream idem-2 at version %d, want %d", v, other.Version())
		}
	})

	t.Run("ConcurrentRepeats", func(t *testing.T) {
		// A retried command racing its original: the same append from
		// many goroutines at once is written once, and every other
		// caller gets the same result marked Duplicate.
		const callers = 8
		for round := range 3 {
			stream := fmt.Sprintf("idem-race-%d", round)
			evs := newEvents(1+round, stream)
			results := make([]eventstore.AppendResult, callers)
			errs := make([]error, callers)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range callers {
				wg.Go(func() {
					<-start
					results[i], errs[i] = s.Append(ctx, stream, eventstore.NoStream, evs...)
				})
			}
			close(start)
			wg.Wait()
			written := -1
			for i, err := range errs {
				if err != nil {
					t.Fatalf("round %d caller %d: %v", round, i, err)
				}
				if !results[i].Duplicate {
					if written >= 0 {
						t.Fatalf("round %d: callers %d and %d both wrote the append", round, written, i)
					}
					written = i
				}
			}
			if written < 0 {
				t.Fatalf("round %d: every caller was told Duplicate, none wrote", round)
			}
			for i, r := range results {
				if !slices.Equal(r.Streams, results[written].Streams) || r.Position != results[written].Position {
					t.Fatalf("round %d caller %d: result %+v, the writer got %+v", round, i, r, results[written])
				}
			}
			recs := collect(t, s.ReadStream(ctx, stream, 0))
			checkRecords(t, stream, evs, versionRange(1, int64(len(evs))), recs)
		}

		// The same event ID raced into different streams: one wins. The
		// others are told the ID is taken, or get a retryable conflict
		// (the store may not know yet whether the winner's append is the
		// same as theirs) that a retry turns into ErrDuplicateEvent.
		ev := newEvent("Raced", "{}")
		errs := make([]error, callers)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range callers {
			wg.Go(func() {
				<-start
				_, errs[i] = s.Append(ctx, fmt.Sprintf("idem-race-x%d", i), eventstore.Any, ev)
			})
		}
		close(start)
		wg.Wait()
		wins := 0
		for i, err := range errs {
			switch {
			case err == nil:
				wins++
			case errors.Is(err, eventstore.ErrDuplicateEvent):
			case eventstore.IsRetryable(err):
				_, err = s.Append(ctx, fmt.Sprintf("idem-race-x%d", i), eventstore.Any, ev)
				if !errors.Is(err, eventstore.ErrDuplicateEvent) {
					t.Fatalf("caller %d: retry after a conflict: %v, want ErrDuplicateEvent", i, err)
				}
			default:
				t.Fatalf("caller %d: %v, want success, ErrDuplicateEvent or a retryable conflict", i, err)
			}
		}
		if wins != 1 {
			t.Fatalf("%d callers stored event %s, want exactly 1", wins, ev.ID)
		}
		r, err := s.ReadEvent(ctx, ev.ID)
		if err != nil || r.Version != 1 {
			t.Fatalf("ReadEvent = %+v, %v", r, err)
		}
		for i := range callers {
			stream := fmt.Sprintf("idem-race-x%d", i)
			want := int64(0)
			if stream == r.StreamID {
				want = 1
			}
			if v := streamVersion(ctx, t, s, stream); v != want {
				t.Fatalf("stream %q at version %d, want %d", stream, v, want)
			}
		}
	})

	t.Run("ZeroIDsAssigned", func(t *testing.T) {
		evs := []eventstore.Event{
			{Type: "NoID", Data: []byte(`{"n":1}`)},
			{Type: "NoID", Data: []byte(`{"n":2}`)},
		}
		append1(ctx, t, s, "idem-zero", eventstore.NoStream, evs...)
		append1(ctx, t, s, "idem-zero", eventstore.Exact(2), evs...)
		recs := collect(t, s.ReadStream(ctx, "idem-zero", 1))
		if len(recs) != 4 {
			t.Fatalf("got %d records, want 4 (zero IDs must not make appends duplicates)", len(recs))
		}
		seen := map[uuid.UUID]bool{}
		for _, r := range recs {
			if r.ID == uuid.Nil || seen[r.ID] {
				t.Fatalf("record %d has ID %s: want a fresh, distinct ID", r.Version, r.ID)
			}
			seen[r.ID] = true
			got, err := s.ReadEvent(ctx, r.ID)
			if err != nil || got.Version != r.Version || got.StreamID != "idem-zero" {
				t.Fatalf("ReadEvent(%s) = %+v, %v", r.ID, got, err)
			}
		}
	})
}

func (h Harness) testValidation(t *testing.T) {
	ctx, s := h.newStore(t)
	limits := h.Limits
	if limits.MaxStreamIDLength <= 0 {
		limits.MaxStreamIDLength = eventstore.DefaultMaxStreamIDLength
	}
	if limits.MaxEventTypeLength <= 0 {
		limits.MaxEventTypeLength = eventstore.DefaultMaxEventTypeLength
	}
	if limits.MaxEventSize <= 0 {
		limits.MaxEventSize = eventstore.DefaultMaxEventSize
	}
	append1(ctx, t, s, "valid-existing", eventstore.NoStream, newEvents(1, "x")...)
	dupID := eventstore.NewEventID()
	ok := func() []eventstore.Event { return newEvents(1, "ok") }
	one := func(stream string, evs ...eventstore.Event) []eventstore.StreamAppend {
		return []eventstore.StreamAppend{{StreamID: stream, Expected: eventstore.Any, Events: evs}}
	}
	badStreams := map[string]string{
		"EmptyStreamID":     "",
		"LongStreamID":      strings.Repeat("s", limits.MaxStreamIDLength+1),
		"NULInStreamID":     "a\x00b",
		"NewlineInStreamID": "a\nb",
		"TabInStreamID":     "a\tb",
		"DELInStreamID":     "a\x7fb",
		"C1InStreamID":      "a\u0085b",
		"BadUTF8StreamID":   "a\xffb",
	}
	cases := map[string][]eventstore.StreamAppend{
		"NoAppends":         nil,
		"NoEvents":          one("valid-none"),
		"EmptyType":         one("valid-a", eventstore.Event{ID: eventstore.NewEventID(), Data: []byte("{}")}),
		"LongType":          one("valid-a", eventstore.Event{Type: strings.Repeat("T", limits.MaxEventTypeLength+1), Data: []byte("{}")}),
		"ControlInType":     one("valid-a", eventstore.Event{Type: "T\n", Data: []byte("{}")}),
		"BadUTF8Type":       one("valid-a", eventstore.Event{Type: "T\xff", Data: []byte("{}")}),
		"NULInMetadata":     one("valid-a", eventstore.Event{Type: "T", Data: []byte("{}"), Metadata: eventstore.Metadata{"k": "a\x00b"}}),
		"BadUTF8Metadata":   one("valid-a", eventstore.Event{Type: "T", Data: []byte("{}"), Metadata: eventstore.Metadata{"k\xff": "v"}}),
		"NilData":           one("valid-a", eventstore.Event{Type: "T"}),
		"EmptyData":         one("valid-a", eventstore.Event{Type: "T", Data: []byte{}}),
		"OversizedEvent":    one("valid-a", eventstore.Event{Type: "T", Data: make([]byte, limits.MaxEventSize+1)}),
		"DuplicateIDs":      one("valid-a", eventstore.Event{ID: dupID, Type: "T", Data: []byte("1")}, eventstore.Event{ID: dupID, Type: "T", Data: []byte("2")}),
		"SecondEventBad":    one("valid-a", newEvent("T", "1"), eventstore.Event{Type: "", Data: []byte("2")}),
		"InvalidExpected":   {{StreamID: "valid-a", Expected: eventstore.ExpectedVersion(-3), Events: ok()}},
		"InvalidExpected2":  {{StreamID: "valid-existing", Expected: eventstore.ExpectedVersion(-100), Events: ok()}},
		"SameStreamTwice":   {{StreamID: "valid-a", Expected: eventstore.Any, Events: ok()}, {StreamID: "valid-a", Expected: eventstore.Any, Events: ok()}},
		"DuplicateIDsMulti": {{StreamID: "valid-a", Expected: eventstore.Any, Events: []eventstore.Event{{ID: dupID, Type: "T", Data: []byte("1")}}}, {StreamID: "valid-b", Expected: eventstore.Any, Events: []eventstore.Event{{ID: dupID, Type: "T", Data: []byte("1")}}}},
		"SecondStreamBad":   {{StreamID: "valid-a", Expected: eventstore.Any, Events: ok()}, {StreamID: "", Expected: eventstore.Any, Events: ok()}},
	}
	for name, id := range badStreams {
		cases[name] = one(id, ok()...)
	}
	before := mark(ctx, t, s)
	for name, appends := range cases {
		t.Run(name, func(t *testing.T) {
			err := noPanic(t, func() error {
				if len(appends) == 1 {
					_, err := s.Append(ctx, appends[0].StreamID, appends[0].Expected, appends[0].Events...)
					return err
				}
				_, err := s.AppendMulti(ctx, appends...)
				return err
			})
			if !errors.Is(err, eventstore.ErrInvalidArgument) {
				t.Fatalf("got error %v, want ErrInvalidArgument", err)
			}
			if len(appends) > 1 {
				// The same request through AppendMulti when it was one stream.
				return
			}
			err = noPanic(t, func() error { _, err := s.AppendMulti(ctx, appends...); return err })
			if !errors.Is(err, eventstore.ErrInvalidArgument) {
				t.Fatalf("AppendMulti: got error %v, want ErrInvalidArgument", err)
			}
		})
	}
	t.Run("Reads", func(t *testing.T) {
		for name, id := range badStreams {
			wantErr := func(op string, err error) {
				t.Helper()
				if !errors.Is(err, eventstore.ErrInvalidArgument) && !errors.Is(err, eventstore.ErrStreamNotFound) {
					t.Errorf("%s of %s: got %v, want ErrInvalidArgument or ErrStreamNotFound", op, name, err)
				}
			}
			wantErr("StreamVersion", noPanic(t, func() error { _, err := s.StreamVersion(ctx, id); return err }))
			wantErr("ReadStream", noPanic(t, func() error { _, err := eventstore.Collect(s.ReadStream(ctx, id, 0)); return err }))
			wantErr("ReadStreamBackward", noPanic(t, func() error { _, err := eventstore.Collect(s.ReadStreamBackward(ctx, id, 0)); return err }))
		}
	})
	if leaked := fence(ctx, t, s, before); len(leaked) != 0 {
		t.Fatalf("invalid appends wrote %d records, first in stream %q", len(leaked), leaked[0].StreamID)
	}
	for _, stream := range []string{"valid-a", "valid-b", "valid-none"} {
		if v := streamVersion(ctx, t, s, stream); v != 0 {
			t.Fatalf("stream %q has version %d after invalid appends only", stream, v)
		}
	}
	if v := streamVersion(ctx, t, s, "valid-existing"); v != 1 {
		t.Fatalf("stream valid-existing has version %d, want 1", v)
	}

	t.Run("AtLimits", func(t *testing.T) {
		stream := strings.Repeat("s", limits.MaxStreamIDLength)
		ev := eventstore.Event{ID: eventstore.NewEventID(), Type: strings.Repeat("T", limits.MaxEventTypeLength), Data: bytes.Repeat([]byte("x"), min(limits.MaxEventSize, 64<<10))}
		append1(ctx, t, s, stream, eventstore.NoStream, ev)
		recs := collect(t, s.ReadStream(ctx, stream, 1))
		checkRecords(t, stream, []eventstore.Event{ev}, []int64{1}, recs)
	})
}

// noPanic runs fn and turns a panic into a test failure.
func noPanic(t tb, fn func() error) (err error) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Errorf("panic: %v", p)
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return fn()
}
