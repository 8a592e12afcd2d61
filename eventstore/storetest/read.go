package storetest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/eskit/eskit/eventstore"
)

func (h Harness) testReadStream(t *testing.T) {
	ctx, s := h.newStore(t)
	const stream = "read-1"
	evs := newEvents(5, "read")
	evs[1].Metadata = eventstore.Metadata{"quote": `"'\`, "empty": "", "unicode": "é流🎉", "newline": "a\nb", "": "empty key"}
	evs[2].Metadata = nil
	evs[3].Type = "Other"
	evs[4].Data = []byte{0, 1, 2, 0xff, '\n'}
	start := time.Now()
	first := append1(ctx, t, s, stream, eventstore.NoStream, evs[:2]...)
	second := append1(ctx, t, s, stream, eventstore.Exact(2), evs[2:]...)
	append1(ctx, t, s, "read-2", eventstore.NoStream, newEvents(3, "noise")...)
	if second.Version() != 5 || first.Version() != 2 {
		t.Fatalf("versions %d, %d; want 2, 5", first.Version(), second.Version())
	}
	if !second.Position.After(first.Position) {
		t.Fatalf("later append at %s, not after the earlier one at %s", second.Position, first.Position)
	}
	all := collect(t, s.ReadStream(ctx, stream, 0))
	checkRecords(t, stream, evs, versionRange(1, 5), all)
	for i := 1; i < len(all); i++ {
		if !all[i].Position.After(all[i-1].Position) {
			t.Fatalf("version %d at %s, not after version %d at %s", all[i].Version, all[i].Position, all[i-1].Version, all[i-1].Position)
		}
	}
	if all[1].Position != first.Position || all[4].Position != second.Position {
		t.Fatalf("results at %s and %s; records at %s and %s", first.Position, second.Position, all[1].Position, all[4].Position)
	}
	for _, r := range all {
		if d := r.RecordedAt.Sub(start); d < -time.Hour || d > time.Hour {
			t.Fatalf("RecordedAt %s is far from the time of the append (%s)", r.RecordedAt, start)
		}
	}

	t.Run("Forward", func(t *testing.T) {
		for _, tc := range []struct {
			from     int64
			versions []int64
		}{
			{-3, versionRange(1, 5)},
			{1, versionRange(1, 5)},
			{3, versionRange(3, 5)},
			{5, []int64{5}},
			{6, nil},
			{100, nil},
		} {
			recs := collect(t, s.ReadStream(ctx, stream, tc.from))
			checkRecords(t, stream, pick(evs, tc.versions), tc.versions, recs)
		}
	})

	t.Run("Backward", func(t *testing.T) {
		for _, tc := range []struct {
			from     int64
			versions []int64
		}{
			{0, versionRange(5, 1)},
			{-1, versionRange(5, 1)},
			{5, versionRange(5, 1)},
			{3, versionRange(3, 1)},
			{1, []int64{1}},
			{9, versionRange(5, 1)},
		} {
			recs := collect(t, s.ReadStreamBackward(ctx, stream, tc.from))
			checkRecords(t, stream, pick(evs, tc.versions), tc.versions, recs)
			for i, r := range recs {
				if r.Position != all[r.Version-1].Position {
					t.Fatalf("backward record %d: Position %s, forward read says %s", i, r.Position, all[r.Version-1].Position)
				}
			}
		}
	})

	t.Run("Missing", func(t *testing.T) {
		for name, seq := range map[string]func(func(eventstore.Record, error) bool){
			"ReadStream":         s.ReadStream(ctx, "read-missing", 0),
			"ReadStreamBackward": s.ReadStreamBackward(ctx, "read-missing", 0),
			"ReadStreamFrom":     s.ReadStream(ctx, "read-missing", 4),
		} {
			n := 0
			var last error
			for r, err := range seq {
				n++
				if err == nil {
					t.Fatalf("%s of a missing stream yielded record %+v", name, r)
				}
				last = err
			}
			if n != 1 || !errors.Is(last, eventstore.ErrStreamNotFound) {
				t.Fatalf("%s of a missing stream: %d items, last error %v; want one ErrStreamNotFound", name, n, last)
			}
			var nf *eventstore.StreamNotFoundError
			if !errors.As(last, &nf) || nf.Stream != "read-missing" {
				t.Fatalf("%s: error %v is not a *StreamNotFoundError naming the stream", name, last)
			}
		}
		_, err := s.StreamVersion(ctx, "read-missing")
		if !errors.Is(err, eventstore.ErrStreamNotFound) {
			t.Fatalf("StreamVersion of a missing stream: %v, want ErrStreamNotFound", err)
		}
	})

	t.Run("StreamVersion", func(t *testing.T) {
		if v := streamVersion(ctx, t, s, stream); v != 5 {
			t.Fatalf("StreamVersion = %d, want 5", v)
		}
		if v := streamVersion(ctx, t, s, "read-2"); v != 3 {
			t.Fatalf("StreamVersion = %d, want 3", v)
		}
	})

	t.Run("ReadEvent", func(t *testing.T) {
		for _, want := range all {
			got, err := s.ReadEvent(ctx, want.ID)
			if err != nil {
				t.Fatalf("ReadEvent(%s): %v", want.ID, err)
			}
			checkRecords(t, stream, []eventstore.Event{want.Event}, []int64{want.Version}, []eventstore.Record{got})
			if got.Position != want.Position || !got.RecordedAt.Equal(want.RecordedAt) {
				t.Fatalf("ReadEvent: Position %s, RecordedAt %s; ReadStream says %s, %s", got.Position, got.RecordedAt, want.Position, want.RecordedAt)
			}
		}
		_, err := s.ReadEvent(ctx, eventstore.NewEventID())
		if !errors.Is(err, eventstore.ErrEventNotFound) {
			t.Fatalf("ReadEvent of an unknown ID: %v, want ErrEventNotFound", err)
		}
	})
}

// pick returns the events with the given 1-based versions.
func pick(evs []eventstore.Event, versions []int64) []eventstore.Event {
	out := make([]eventstore.Event, len(versions))
	for i, v := range versions {
		out[i] = evs[v-1]
	}
	return out
}

func (h Harness) testReadAll(t *testing.T) {
	ctx, s := h.newStore(t)
	if p := head(ctx, t, s); !p.IsZero() {
		t.Fatalf("Head of an empty store = %s, want the zero Position", p)
	}
	if recs, err := s.ReadAll(ctx, eventstore.Position{}, 10); err != nil || len(recs) != 0 {
		t.Fatalf("ReadAll of an empty store = %d records, %v", len(recs), err)
	}

	type appended struct {
		stream  string
		event   eventstore.Event
		version int64
	}
	var want []appended
	var last eventstore.AppendResult
	for i := range 9 {
		stream := fmt.Sprintf("all-%d", i%4)
		evs := newEvents(1+i%3, stream)
		v0 := streamVersion(ctx, t, s, stream)
		last = append1(ctx, t, s, stream, eventstore.Exact(v0), evs...)
		for j, e := range evs {
			want = append(want, appended{stream, e, v0 + int64(j) + 1})
		}
	}
	waitFeed(ctx, t, s, last.Position)
	if p := head(ctx, t, s); p != last.Position {
		t.Fatalf("Head = %s, want the last append's Position %s", p, last.Position)
	}

	check := func(t *testing.T, recs []eventstore.Record, want []appended) {
		t.Helper()
		if len(recs) != len(want) {
			t.Fatalf("got %d records, want %d", len(recs), len(want))
		}
		for i, r := range recs {
			checkRecords(t, want[i].stream, []eventstore.Event{want[i].event}, []int64{want[i].version}, recs[i:i+1])
			if i > 0 && !r.Position.After(recs[i-1].Position) {
				t.Fatalf("record %d at %s, not after %s", i, r.Position, recs[i-1].Position)
			}
		}
	}

	var full []eventstore.Record
	t.Run("OnePage", func(t *testing.T) {
		recs, err := s.ReadAll(ctx, eventstore.Position{}, 1000)
		if err != nil {
			t.Fatalf("ReadAll: %v", err)
		}
		check(t, recs, want)
		full = recs
	})
	if len(full) != len(want) {
		t.FailNow()
	}
	t.Run("HugeLimit", func(t *testing.T) {
		// No limit value may panic or overflow: the largest is "everything".
		for _, limit := range []int{math.MaxInt, math.MaxInt32, math.MinInt} {
			recs, err := s.ReadAll(ctx, eventstore.Position{}, limit)
			if err != nil {
				t.Fatalf("ReadAll(limit %d): %v", limit, err)
			}
			if limit > 0 {
				check(t, recs, want)
			}
			if _, err := s.ReadAll(ctx, full[len(full)-1].Position, limit); err != nil {
				t.Fatalf("ReadAll(after the head, limit %d): %v", limit, err)
			}
		}
	})
	t.Run("Pages", func(t *testing.T) {
		for _, limit := range []int{1, 2, 5, 7, len(want) - 1, len(want), len(want) + 1} {
			var got []eventstore.Record
			pos := eventstore.Position{}
			for {
				page, err := s.ReadAll(ctx, pos, limit)
				if err != nil {
					t.Fatalf("ReadAll(%s, %d): %v", pos, limit, err)
				}
				if len(page) > limit {
					t.Fatalf("ReadAll(%s, %d) returned %d records", pos, limit, len(page))
				}
				if len(page) == 0 {
					break
				}
				if len(page) < limit && len(got)+len(page) < len(want) {
					t.Fatalf("ReadAll(%s, %d) returned a short page of %d before the end", pos, limit, len(page))
				}
				got = append(got, page...)
				pos = page[len(page)-1].Position
				if len(got) > len(want) {
					break
				}
			}
			check(t, got, want)
		}
	})
	t.Run("AfterPosition", func(t *testing.T) {
		for i, r := range full {
			recs, err := s.ReadAll(ctx, r.Position, 3)
			if err != nil {
				t.Fatalf("ReadAll: %v", err)
			}
			n := min(3, len(want)-i-1)
			check(t, recs, want[i+1:i+1+n])
		}
		// A Position between two records (taken from neither) starts at
		// the next record: positions are compared, not looked up.
		between := full[3].Position
		between.Seq++
		if between.After(full[3].Position) && between.Before(full[4].Position) {
			recs, err := s.ReadAll(ctx, between, 100)
			if err != nil {
				t.Fatalf("ReadAll: %v", err)
			}
			check(t, recs, want[4:])
		}
		beyond := eventstore.Position{Tx: ^uint64(0), Seq: ^uint64(0)}
		recs, err := s.ReadAll(ctx, beyond, 10)
		if err != nil || len(recs) != 0 {
			t.Fatalf("ReadAll after the largest Position: %d records, %v", len(recs), err)
		}
	})
}

func (h Harness) testEarlyBreak(t *testing.T) {
	ctx, s := h.newStore(t)
	res := append1(ctx, t, s, "break", eventstore.NoStream, newEvents(20, "break")...)
	waitFeed(ctx, t, s, res.Position)
	// More early exits than any sane connection pool has connections: an
	// iterator that leaks its resources on break makes the reads after
	// the loop hang.
	for i := range 40 {
		for range s.ReadStream(ctx, "break", 0) {
			break
		}
		n := 0
		for _, err := range s.ReadStreamBackward(ctx, "break", 0) {
			if err != nil {
				t.Fatalf("ReadStreamBackward: %v", err)
			}
			if n++; n == 3 {
				break
			}
		}
		for range s.ReadStream(ctx, "break-missing", 0) {
			break
		}
		if i%8 == 0 {
			subCtx, cancel := context.WithCancel(ctx)
			for range s.Subscribe(subCtx, eventstore.Position{}) {
				break
			}
			cancel()
		}
	}
	readCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	recs, err := eventstore.Collect(s.ReadStream(readCtx, "break", 0))
	if err != nil || len(recs) != 20 {
		t.Fatalf("ReadStream after early breaks: %d records, %v", len(recs), err)
	}
	if _, err := s.Append(readCtx, "break", eventstore.Exact(20), newEvents(1, "after")...); err != nil {
		t.Fatalf("Append after early breaks: %v", err)
	}
}

func (h Harness) testStreamIDs(t *testing.T) {
	ctx, s := h.newStore(t)
	maxLen := h.Limits.MaxStreamIDLength
	if maxLen <= 0 {
		maxLen = eventstore.DefaultMaxStreamIDLength
	}
	ids := []string{
		"order.123",
		"order.*",
		"order.>",
		"a*b>c.d",
		"with space",
		" leading and trailing ",
		"ünïcødé-流-🎉",
		`quote'"back\slash`,
		"percent%",
		"percent%x",
		"under_score",
		"underXscore",
		"UPPER",
		"upper",
		"slash/colon:semi;",
		strings.Repeat("é", maxLen/2),
	}
	type stored struct {
		evs []eventstore.Event
		res eventstore.AppendResult
	}
	got := map[string]stored{}
	for i, id := range ids {
		evs := newEvents(1+i%2, fmt.Sprint(i))
		if len(id) < 64 {
			evs[0].Type = "Type." + id
		}
		got[id] = stored{evs, append1(ctx, t, s, id, eventstore.NoStream, evs...)}
	}
	for _, id := range ids {
		want := got[id]
		recs := collect(t, s.ReadStream(ctx, id, 0))
		checkRecords(t, id, want.evs, versionRange(1, int64(len(want.evs))), recs)
		back := collect(t, s.ReadStreamBackward(ctx, id, 0))
		checkRecords(t, id, reversed(want.evs), versionRange(int64(len(want.evs)), 1), back)
		if v := streamVersion(ctx, t, s, id); v != int64(len(want.evs)) {
			t.Fatalf("StreamVersion(%q) = %d, want %d", id, v, len(want.evs))
		}
		r, err := s.ReadEvent(ctx, want.evs[0].ID)
		if err != nil || r.StreamID != id {
			t.Fatalf("ReadEvent: stream %q, %v; want %q", r.StreamID, err, id)
		}
		// Conditions apply to this stream only, never to one whose name
		// matches it as a pattern.
		_, err = s.Append(ctx, id, eventstore.NoStream, newEvents(1, "again")...)
		checkConflict(t, err, id, eventstore.NoStream, int64(len(want.evs)))
	}
	last := got[ids[len(ids)-1]].res.Position
	feed := readFeed(ctx, t, s, eventstore.Position{}, last, 100)
	i := 0
	for _, id := range ids {
		for _, e := range got[id].evs {
			if i >= len(feed) || feed[i].StreamID != id || feed[i].ID != e.ID {
				t.Fatalf("feed record %d does not carry stream %q, event %s", i, id, e.ID)
			}
			i++
		}
	}
	if _, err := eventstore.Collect(s.ReadStream(ctx, "percent_", 0)); !errors.Is(err, eventstore.ErrStreamNotFound) {
		t.Fatalf("ReadStream(%q): %v, want ErrStreamNotFound", "percent_", err)
	}
	if _, err := s.StreamVersion(ctx, "order.%"); !errors.Is(err, eventstore.ErrStreamNotFound) {
		t.Fatalf("StreamVersion(%q): %v, want ErrStreamNotFound", "order.%", err)
	}
}
