package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"pgregory.net/rapid"

	"github.com/eskit/eskit/eventstore"
)

// testModel runs random sequences of appends and reads against the store
// and against a simple in-memory model, and compares every answer. All
// iterations share one store; each one works in its own streams (a fresh
// name prefix) and reads only those from the feed.
func (h Harness) testModel(t *testing.T) {
	ctx, s := h.newStore(t)
	iteration := 0
	rapid.Check(t, func(rt *rapid.T) {
		iteration++
		m := &model{
			ctx:     ctx,
			s:       s,
			prefix:  fmt.Sprintf("model-%d-%s/", iteration, eventstore.NewEventID().String()[24:]),
			start:   head(ctx, rt, s),
			streams: make(map[string][]*modelEvent),
			ids:     make(map[uuid.UUID]*modelEvent),
		}
		for _, n := range []string{"a", "b", "c", "d.*>", "é ü"} {
			m.names = append(m.names, m.prefix+n)
		}
		rt.Repeat(rapid.StateMachineActions(m))
		m.verifyAll(rt)
	})
}

// modelEvent is the model's record of one appended event.
type modelEvent struct {
	ev      eventstore.Event
	stream  string
	version int64
	// pos is known for the last event of each append (the append's
	// result) and for every event the feed has shown.
	pos eventstore.Position
}

// pastAppend is a successful append the model remembers for repeats.
type pastAppend struct {
	appends []eventstore.StreamAppend
	res     eventstore.AppendResult
}

// model is the rapid state machine: the store under test and what it
// should hold.
type model struct {
	ctx    context.Context
	s      eventstore.Store
	prefix string
	names  []string
	start  eventstore.Position

	streams map[string][]*modelEvent
	ids     map[uuid.UUID]*modelEvent
	log     []*modelEvent
	past    []pastAppend
	lastPos eventstore.Position
}

// Check is rapid's invariant hook; the actions compare as they go and the
// iteration ends with a full comparison.
func (m *model) Check(t *rapid.T) {}

func (m *model) drawStream(t *rapid.T, label string) string {
	return rapid.SampledFrom(m.names).Draw(t, label)
}

func (m *model) drawExpected(t *rapid.T, stream string) eventstore.ExpectedVersion {
	cur := int64(len(m.streams[stream]))
	switch rapid.IntRange(0, 7).Draw(t, "expected") {
	case 0:
		return eventstore.Any
	case 1:
		return eventstore.NoStream
	case 2:
		return eventstore.StreamExists
	case 3:
		return eventstore.Exact(max(cur-1, 0))
	case 4:
		return eventstore.Exact(cur + 1)
	case 5:
		return eventstore.Exact(rapid.Int64Range(0, 6).Draw(t, "exact"))
	default:
		return eventstore.Exact(cur)
	}
}

// drawEvents draws events for one stream. The first is always new; later
// ones sometimes reuse the ID of a stored event, which must make the append
// fail with ErrDuplicateEvent.
func (m *model) drawEvents(t *rapid.T, reuse bool) []eventstore.Event {
	n := rapid.IntRange(1, 3).Draw(t, "events")
	evs := make([]eventstore.Event, n)
	for i := range evs {
		e := eventstore.Event{
			ID:   eventstore.NewEventID(),
			Type: rapid.SampledFrom([]string{"Opened", "Deposited", "Withdrawn", "Closed"}).Draw(t, "type"),
			Data: rapid.SliceOfN(rapid.Byte(), 1, 24).Draw(t, "data"),
		}
		md := rapid.MapOfN(rapid.SampledFrom([]string{eventstore.MetaCorrelationID, eventstore.MetaCausationID, "k"}),
			rapid.StringMatching(`[a-z0-9 .é-]{0,8}`), 0, 2).Draw(t, "metadata")
		if len(md) > 0 {
			e.Metadata = md
		}
		if reuse && i > 0 && len(m.log) > 0 && rapid.IntRange(0, 5).Draw(t, "reuse") == 0 {
			e.ID = m.log[rapid.IntRange(0, len(m.log)-1).Draw(t, "reused")].ev.ID
		}
		evs[i] = e
	}
	return evs
}

// Append appends new events (occasionally reusing a stored ID) to one
// stream with a random condition.
func (m *model) Append(t *rapid.T) {
	stream := m.drawStream(t, "stream")
	m.apply(t, []eventstore.StreamAppend{{StreamID: stream, Expected: m.drawExpected(t, stream), Events: m.drawEvents(t, true)}})
}

// AppendMulti appends to two or three streams at once.
func (m *model) AppendMulti(t *rapid.T) {
	streams := rapid.SliceOfNDistinct(rapid.SampledFrom(m.names), 2, 3, rapid.ID[string]).Draw(t, "streams")
	appends := make([]eventstore.StreamAppend, len(streams))
	for i, stream := range streams {
		appends[i] = eventstore.StreamAppend{StreamID: stream, Expected: m.drawExpected(t, stream), Events: m.drawEvents(t, i == 0)}
	}
	m.apply(t, appends)
}

// Repeat repeats an earlier successful append, with any condition: the
// store must answer with the original result.
func (m *model) Repeat(t *rapid.T) {
	if len(m.past) == 0 {
		t.Skip("nothing appended yet")
	}
	p := m.past[rapid.IntRange(0, len(m.past)-1).Draw(t, "past")]
	appends := slices.Clone(p.appends)
	for i := range appends {
		appends[i].Expected = m.drawExpected(t, appends[i].StreamID)
	}
	m.apply(t, appends)
}

// apply performs the appends on the store and checks the answer against
// the model, updating the model when they succeed.
func (m *model) apply(t *rapid.T, appends []eventstore.StreamAppend) {
	var res eventstore.AppendResult
	var err error
	if len(appends) == 1 {
		res, err = m.s.Append(m.ctx, appends[0].StreamID, appends[0].Expected, appends[0].Events...)
	} else {
		res, err = m.s.AppendMulti(m.ctx, appends...)
	}

	seen := map[uuid.UUID]bool{}
	for _, a := range appends {
		for _, e := range a.Events {
			if seen[e.ID] {
				if !errors.Is(err, eventstore.ErrInvalidArgument) {
					t.Fatalf("append with event ID %s twice: result %+v, error %v; want ErrInvalidArgument", e.ID, res, err)
				}
				return
			}
			seen[e.ID] = true
		}
	}
	if p := m.repeatOf(appends); p != nil {
		if err != nil || !res.Duplicate || !slices.Equal(res.Streams, p.res.Streams) || res.Position != p.res.Position {
			t.Fatalf("repeated append: result %+v, error %v; want the original %+v marked Duplicate", res, err, p.res)
		}
		return
	}
	stored := false
	for id := range seen {
		if m.ids[id] != nil {
			stored = true
		}
	}
	var failing []eventstore.StreamAppend
	for _, a := range appends {
		if !a.Expected.Check(int64(len(m.streams[a.StreamID]))) {
			failing = append(failing, a)
		}
	}
	conflictOK := func() bool {
		var ce *eventstore.ConcurrencyError
		if !errors.As(err, &ce) {
			return false
		}
		for _, a := range failing {
			if ce.Stream == a.StreamID && ce.Expected == a.Expected && ce.Actual == int64(len(m.streams[a.StreamID])) {
				return true
			}
		}
		return false
	}
	switch {
	case stored && len(failing) > 0:
		if !errors.Is(err, eventstore.ErrDuplicateEvent) && !conflictOK() {
			t.Fatalf("append reusing a stored ID with a failing condition: result %+v, error %v", res, err)
		}
		return
	case stored:
		if !errors.Is(err, eventstore.ErrDuplicateEvent) {
			t.Fatalf("append reusing a stored ID: result %+v, error %v; want ErrDuplicateEvent", res, err)
		}
		return
	case len(failing) > 0:
		if !conflictOK() {
			t.Fatalf("append with failing conditions on %v: result %+v, error %v; want a *ConcurrencyError naming one of them", streamIDs(failing), res, err)
		}
		return
	}
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	if res.Duplicate || len(res.Streams) != len(appends) {
		t.Fatalf("append: result %+v", res)
	}
	if !res.Position.After(m.lastPos) {
		t.Fatalf("append at %s, not after the previous one at %s", res.Position, m.lastPos)
	}
	var last *modelEvent
	for i, a := range appends {
		for _, e := range a.Events {
			me := &modelEvent{ev: e, stream: a.StreamID, version: int64(len(m.streams[a.StreamID])) + 1}
			m.streams[a.StreamID] = append(m.streams[a.StreamID], me)
			m.ids[e.ID] = me
			m.log = append(m.log, me)
			last = me
		}
		want := eventstore.StreamResult{StreamID: a.StreamID, Version: int64(len(m.streams[a.StreamID]))}
		if res.Streams[i] != want {
			t.Fatalf("append: stream result %d is %+v, want %+v", i, res.Streams[i], want)
		}
	}
	last.pos = res.Position
	m.lastPos = res.Position
	m.past = append(m.past, pastAppend{appends: appends, res: res})
}

func streamIDs(appends []eventstore.StreamAppend) []string {
	ids := make([]string, len(appends))
	for i, a := range appends {
		ids[i] = a.StreamID
	}
	return ids
}

// repeatOf returns the earlier append with the same streams and event IDs
// in the same order, if any.
func (m *model) repeatOf(appends []eventstore.StreamAppend) *pastAppend {
	for i := range m.past {
		p := &m.past[i]
		if slices.EqualFunc(p.appends, appends, func(a, b eventstore.StreamAppend) bool {
			return a.StreamID == b.StreamID && slices.EqualFunc(a.Events, b.Events, func(x, y eventstore.Event) bool { return x.ID == y.ID })
		}) {
			return p
		}
	}
	return nil
}

// ReadStream reads a stream forward from a random version.
func (m *model) ReadStream(t *rapid.T) {
	stream := m.drawStream(t, "stream")
	evs := m.streams[stream]
	from := rapid.Int64Range(-1, int64(len(evs))+2).Draw(t, "from")
	recs, err := eventstore.Collect(m.s.ReadStream(m.ctx, stream, from))
	if len(evs) == 0 {
		if !errors.Is(err, eventstore.ErrStreamNotFound) || len(recs) > 0 {
			t.Fatalf("ReadStream of missing stream %q: %d records, error %v", stream, len(recs), err)
		}
		return
	}
	if err != nil {
		t.Fatalf("ReadStream(%q, %d): %v", stream, from, err)
	}
	start := min(max(from, 1), int64(len(evs))+1)
	compareRecords(t, "ReadStream", recs, evs[start-1:])
}

// ReadStreamBackward reads a stream backward from a random version.
func (m *model) ReadStreamBackward(t *rapid.T) {
	stream := m.drawStream(t, "stream")
	evs := m.streams[stream]
	from := rapid.Int64Range(-1, int64(len(evs))+2).Draw(t, "from")
	recs, err := eventstore.Collect(m.s.ReadStreamBackward(m.ctx, stream, from))
	if len(evs) == 0 {
		if !errors.Is(err, eventstore.ErrStreamNotFound) || len(recs) > 0 {
			t.Fatalf("ReadStreamBackward of missing stream %q: %d records, error %v", stream, len(recs), err)
		}
		return
	}
	if err != nil {
		t.Fatalf("ReadStreamBackward(%q, %d): %v", stream, from, err)
	}
	start := from
	if start < 1 || start > int64(len(evs)) {
		start = int64(len(evs))
	}
	compareRecords(t, "ReadStreamBackward", recs, reversed(evs[:start]))
}

// StreamVersion compares a stream's version.
func (m *model) StreamVersion(t *rapid.T) {
	stream := m.drawStream(t, "stream")
	v, err := m.s.StreamVersion(m.ctx, stream)
	want := int64(len(m.streams[stream]))
	if want == 0 {
		if !errors.Is(err, eventstore.ErrStreamNotFound) {
			t.Fatalf("StreamVersion of missing stream %q: %d, %v", stream, v, err)
		}
		return
	}
	if err != nil || v != want {
		t.Fatalf("StreamVersion(%q) = %d, %v; want %d", stream, v, err, want)
	}
}

// ReadEvent reads a stored event, or an unknown one.
func (m *model) ReadEvent(t *rapid.T) {
	if len(m.log) == 0 || rapid.IntRange(0, 4).Draw(t, "unknown") == 0 {
		if _, err := m.s.ReadEvent(m.ctx, eventstore.NewEventID()); !errors.Is(err, eventstore.ErrEventNotFound) {
			t.Fatalf("ReadEvent of an unknown ID: %v", err)
		}
		return
	}
	me := m.log[rapid.IntRange(0, len(m.log)-1).Draw(t, "event")]
	r, err := m.s.ReadEvent(m.ctx, me.ev.ID)
	if err != nil {
		t.Fatalf("ReadEvent(%s): %v", me.ev.ID, err)
	}
	compareRecords(t, "ReadEvent", []eventstore.Record{r}, []*modelEvent{me})
}

// ReadAll pages through the feed and compares this iteration's records.
func (m *model) ReadAll(t *rapid.T) {
	if len(m.log) == 0 {
		t.Skip("nothing appended yet")
	}
	m.compareFeed(t, rapid.IntRange(1, 12).Draw(t, "limit"))
}

func (m *model) compareFeed(t *rapid.T, limit int) {
	var mine []eventstore.Record
	for _, r := range readFeed(m.ctx, t, m.s, m.start, m.lastPos, limit) {
		if strings.HasPrefix(r.StreamID, m.prefix) {
			mine = append(mine, r)
		}
	}
	compareRecords(t, "ReadAll", mine, m.log)
	// The feed tells every event's Position; the stream reads must agree.
	for i, r := range mine {
		m.log[i].pos = r.Position
	}
}

// verifyAll compares every stream and the feed.
func (m *model) verifyAll(t *rapid.T) {
	for _, stream := range m.names {
		recs, err := eventstore.Collect(m.s.ReadStream(m.ctx, stream, 0))
		if evs := m.streams[stream]; len(evs) > 0 {
			if err != nil {
				t.Fatalf("ReadStream(%q): %v", stream, err)
			}
			compareRecords(t, "ReadStream", recs, evs)
		} else if !errors.Is(err, eventstore.ErrStreamNotFound) {
			t.Fatalf("ReadStream of missing stream %q: %d records, error %v", stream, len(recs), err)
		}
	}
	if len(m.log) > 0 {
		m.compareFeed(t, 100)
	}
}

// compareRecords compares records with the model's events.
func compareRecords(t *rapid.T, op string, recs []eventstore.Record, want []*modelEvent) {
	t.Helper()
	if len(recs) != len(want) {
		t.Fatalf("%s: got %d records, want %d", op, len(recs), len(want))
	}
	for i, r := range recs {
		w := want[i]
		if d := sameEvent(w.ev, r.Event); d != "" {
			t.Fatalf("%s: record %d: %s", op, i, d)
		}
		if r.StreamID != w.stream || r.Version != w.version {
			t.Fatalf("%s: record %d is stream %q version %d, want %q version %d", op, i, r.StreamID, r.Version, w.stream, w.version)
		}
		if !w.pos.IsZero() && r.Position != w.pos {
			t.Fatalf("%s: record %d (stream %q version %d) at %s, want %s", op, i, r.StreamID, r.Version, r.Position, w.pos)
		}
		if r.RecordedAt.IsZero() {
			t.Fatalf("%s: record %d without RecordedAt", op, i)
		}
	}
}
