package storetest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eskit/eskit/eventstore"
)

// testSameStreamRace lets many writers read a stream's version and then
// append to it with Exact(that version) at once, round after round: each
// round exactly one writer must win and every other one must get a
// conflict naming the winner's version.
func (h Harness) testSameStreamRace(t *testing.T) {
	ctx, s := h.newStore(t)
	const (
		writers = 16
		rounds  = 12
		stream  = "race"
	)
	type outcome struct {
		read    int64
		readErr error
		evs     []eventstore.Event
		res     eventstore.AppendResult
		err     error
	}
	var version int64
	var winners []eventstore.Event
	for round := range rounds {
		out := make([]outcome, writers)
		var reads, wg sync.WaitGroup
		reads.Add(writers)
		start := make(chan struct{})
		for w := range writers {
			wg.Go(func() {
				o := &out[w]
				o.read, o.readErr = s.StreamVersion(ctx, stream)
				if errors.Is(o.readErr, eventstore.ErrStreamNotFound) {
					o.read, o.readErr = 0, nil
				}
				reads.Done()
				<-start
				if o.readErr != nil {
					return
				}
				o.evs = newEvents(1+w%3, fmt.Sprintf("r%dw%d", round, w))
				o.res, o.err = s.Append(ctx, stream, eventstore.Exact(o.read), o.evs...)
			})
		}
		reads.Wait()
		close(start)
		wg.Wait()

		winner := -1
		for w, o := range out {
			if o.readErr != nil {
				t.Fatalf("round %d writer %d: StreamVersion: %v", round, w, o.readErr)
			}
			if o.read != version {
				t.Fatalf("round %d writer %d read version %d, want %d", round, w, o.read, version)
			}
			if o.err == nil {
				if winner >= 0 {
					t.Fatalf("round %d: writers %d and %d both appended at version %d", round, winner, w, version)
				}
				winner = w
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no writer won; first error: %v", round, out[0].err)
		}
		won := out[winner]
		newVersion := version + int64(len(won.evs))
		if won.res.Version() != newVersion || won.res.Duplicate {
			t.Fatalf("round %d: winner's result %+v, want version %d", round, won.res, newVersion)
		}
		for w, o := range out {
			if w != winner {
				checkConflict(t, o.err, stream, eventstore.Exact(version), newVersion)
			}
		}
		winners = append(winners, won.evs...)
		version = newVersion
	}
	recs := collect(t, s.ReadStream(ctx, stream, 0))
	checkRecords(t, stream, winners, versionRange(1, version), recs)
	if v := streamVersion(ctx, t, s, stream); v != version {
		t.Fatalf("StreamVersion = %d, want %d", v, version)
	}
}

// committedEvent is what a writer knows about an event it appended.
type committedEvent struct {
	stream  string
	version int64
	data    []byte
	// pos is set on the last event of an append: the append's Position.
	pos eventstore.Position
}

// testFeedUnderLoad has writers append to shared streams (single-stream,
// multi-stream, conditional with retries and, when the harness can, appends
// that roll back) while two readers tail the feed from the start, one with
// Subscribe and one by polling ReadAll. Each reader must see every committed
// event exactly once, in Position order, with each stream's events in
// version order, and never a rolled-back event.
func (h Harness) testFeedUnderLoad(t *testing.T) {
	ctx, s := h.newStore(t)
	const (
		writers          = 8
		appendsPerWriter = 300
		streams          = 24
	)
	endID := eventstore.NewEventID()

	type reader struct {
		name string
		recs []eventstore.Record
		err  error
	}
	readCtx, stopReaders := context.WithTimeout(ctx, 90*time.Second)
	defer stopReaders()
	sub := &reader{name: "Subscribe"}
	poll := &reader{name: "ReadAll"}
	var readersWG sync.WaitGroup
	readersWG.Go(func() {
		for r, err := range s.Subscribe(readCtx, eventstore.Position{}) {
			if err != nil {
				sub.err = err
				return
			}
			sub.recs = append(sub.recs, r)
			if r.ID == endID {
				return
			}
		}
		sub.err = fmt.Errorf("subscription ended before the last event: %w", readCtx.Err())
	})
	readersWG.Go(func() {
		var pos eventstore.Position
		rng := rand.New(rand.NewPCG(1, 2))
		for {
			page, err := s.ReadAll(readCtx, pos, 1+rng.IntN(60))
			if err != nil {
				poll.err = err
				return
			}
			for _, r := range page {
				poll.recs = append(poll.recs, r)
				if r.ID == endID {
					return
				}
			}
			if len(page) > 0 {
				pos = page[len(page)-1].Position
				continue
			}
			select {
			case <-readCtx.Done():
				poll.err = fmt.Errorf("feed ended before the last event: %w", readCtx.Err())
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	})

	type writerLog struct {
		committed  map[uuid.UUID]committedEvent
		rolledBack []uuid.UUID
		conflicts  int
		errs       []error
	}
	logs := make([]writerLog, writers)
	var writersWG sync.WaitGroup
	for w := range writers {
		writersWG.Go(func() {
			wl := &logs[w]
			wl.committed = make(map[uuid.UUID]committedEvent)
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			streamName := func() string { return fmt.Sprintf("load-%d", rng.IntN(streams)) }
			record := func(appends []eventstore.StreamAppend, res eventstore.AppendResult) {
				for i, a := range appends {
					base := res.Streams[i].Version - int64(len(a.Events))
					for j, e := range a.Events {
						wl.committed[e.ID] = committedEvent{stream: a.StreamID, version: base + int64(j) + 1, data: e.Data}
					}
				}
				last := appends[len(appends)-1].Events
				c := wl.committed[last[len(last)-1].ID]
				c.pos = res.Position
				wl.committed[last[len(last)-1].ID] = c
			}
			for i := range appendsPerWriter {
				tag := fmt.Sprintf("w%di%d", w, i)
				kind := rng.IntN(10)
				switch {
				case kind == 0 && h.AppendAndRollback != nil:
					appends := []eventstore.StreamAppend{{StreamID: streamName(), Expected: eventstore.Any, Events: newEvents(1+rng.IntN(2), tag)}}
					if other := streamName(); other != appends[0].StreamID && rng.IntN(2) == 0 {
						appends = append(appends, eventstore.StreamAppend{StreamID: other, Expected: eventstore.Any, Events: newEvents(1, tag+"b")})
					}
					if err := h.AppendAndRollback(ctx, s, appends...); err != nil {
						wl.errs = append(wl.errs, fmt.Errorf("AppendAndRollback: %w", err))
						continue
					}
					for _, a := range appends {
						for _, e := range a.Events {
							wl.rolledBack = append(wl.rolledBack, e.ID)
						}
					}
				case kind <= 2:
					a, b := streamName(), streamName()
					for b == a {
						b = streamName()
					}
					appends := []eventstore.StreamAppend{
						{StreamID: a, Expected: eventstore.Any, Events: newEvents(1+rng.IntN(2), tag+"a")},
						{StreamID: b, Expected: eventstore.Any, Events: newEvents(1+rng.IntN(2), tag+"b")},
					}
					res, err := s.AppendMulti(ctx, appends...)
					if err != nil {
						wl.errs = append(wl.errs, fmt.Errorf("AppendMulti: %w", err))
						continue
					}
					record(appends, res)
				case kind <= 4:
					stream := streamName()
					evs := newEvents(1+rng.IntN(2), tag)
					for range 50 {
						v, err := s.StreamVersion(ctx, stream)
						if errors.Is(err, eventstore.ErrStreamNotFound) {
							v, err = 0, nil
						}
						if err != nil {
							wl.errs = append(wl.errs, fmt.Errorf("StreamVersion: %w", err))
							break
						}
						appends := []eventstore.StreamAppend{{StreamID: stream, Expected: eventstore.Exact(v), Events: evs}}
						res, err := s.AppendMulti(ctx, appends...)
						if errors.Is(err, eventstore.ErrConcurrency) {
							wl.conflicts++
							continue
						}
						if err != nil {
							wl.errs = append(wl.errs, fmt.Errorf("Append(Exact(%d)): %w", v, err))
						} else {
							record(appends, res)
						}
						break
					}
				default:
					appends := []eventstore.StreamAppend{{StreamID: streamName(), Expected: eventstore.Any, Events: newEvents(1+rng.IntN(3), tag)}}
					res, err := s.AppendMulti(ctx, appends...)
					if err != nil {
						wl.errs = append(wl.errs, fmt.Errorf("Append: %w", err))
						continue
					}
					record(appends, res)
				}
			}
		})
	}
	writersWG.Wait()

	committed := make(map[uuid.UUID]committedEvent)
	rolledBack := make(map[uuid.UUID]bool)
	conflicts := 0
	for w, wl := range logs {
		for _, err := range wl.errs {
			t.Errorf("writer %d: %v", w, err)
		}
		maps.Copy(committed, wl.committed)
		for _, id := range wl.rolledBack {
			rolledBack[id] = true
		}
		conflicts += wl.conflicts
	}
	end := eventstore.Event{ID: endID, Type: "End", Data: []byte("{}")}
	endRes, err := s.Append(ctx, "load-end", eventstore.NoStream, end)
	if err != nil {
		stopReaders()
		readersWG.Wait()
		t.Fatalf("final append: %v", err)
	}
	committed[endID] = committedEvent{stream: "load-end", version: 1, data: end.Data, pos: endRes.Position}
	readersWG.Wait()
	t.Logf("%d committed events, %d rolled back, %d conflicts retried; readers saw %d (Subscribe) and %d (ReadAll)",
		len(committed), len(rolledBack), conflicts, len(sub.recs), len(poll.recs))

	for _, r := range []*reader{sub, poll} {
		if r.err != nil {
			t.Errorf("%s reader: %v", r.name, r.err)
			continue
		}
		checkFeed(t, r.name, r.recs, committed, rolledBack)
	}
	if !slices.EqualFunc(sub.recs, poll.recs, func(a, b eventstore.Record) bool { return a.ID == b.ID && a.Position == b.Position }) {
		t.Errorf("Subscribe and ReadAll saw the feed in different orders")
	}
}

// checkFeed checks what a reader saw of the feed against what the writers
// committed and rolled back.
func checkFeed(t *testing.T, name string, recs []eventstore.Record, committed map[uuid.UUID]committedEvent, rolledBack map[uuid.UUID]bool) {
	t.Helper()
	seen := make(map[uuid.UUID]bool, len(recs))
	versions := make(map[string]int64)
	var pos eventstore.Position
	for i, r := range recs {
		if !r.Position.After(pos) {
			t.Errorf("%s: record %d at %s does not follow %s", name, i, r.Position, pos)
			return
		}
		pos = r.Position
		if rolledBack[r.ID] {
			t.Errorf("%s: saw rolled-back event %s (stream %q)", name, r.ID, r.StreamID)
			return
		}
		if seen[r.ID] {
			t.Errorf("%s: saw event %s twice", name, r.ID)
			return
		}
		seen[r.ID] = true
		c, ok := committed[r.ID]
		if !ok {
			t.Errorf("%s: saw event %s (stream %q version %d) that no writer committed", name, r.ID, r.StreamID, r.Version)
			return
		}
		if r.StreamID != c.stream || r.Version != c.version || string(r.Data) != string(c.data) {
			t.Errorf("%s: event %s is stream %q version %d data %q; the writer appended stream %q version %d data %q",
				name, r.ID, r.StreamID, r.Version, r.Data, c.stream, c.version, c.data)
			return
		}
		if !c.pos.IsZero() && c.pos != r.Position {
			t.Errorf("%s: event %s at %s; its append returned Position %s", name, r.ID, r.Position, c.pos)
			return
		}
		if r.Version != versions[r.StreamID]+1 {
			t.Errorf("%s: stream %q version %d follows version %d in the feed", name, r.StreamID, r.Version, versions[r.StreamID])
			return
		}
		versions[r.StreamID] = r.Version
	}
	if len(seen) != len(committed) {
		missing := 0
		for id := range committed {
			if !seen[id] {
				missing++
			}
		}
		t.Errorf("%s: saw %d events; %d committed events are missing", name, len(seen), missing)
	}
}
