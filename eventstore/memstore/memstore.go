// Package memstore is an in-memory eskit event store: the embedded default
// and the store for fast unit tests. It implements the whole
// eventstore.Store contract and is safe for concurrent use. Its Position is
// (commit number, sequence).
package memstore

import (
	"bytes"
	"context"
	"fmt"
	"iter"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/eskit/eskit/eventstore"
)

// Store is an in-memory event store. The zero value is not usable; call New.
type Store struct {
	limits eventstore.Limits
	now    func() time.Time

	mu      sync.RWMutex
	all     []eventstore.Record
	streams map[string][]int // stream -> indexes into all
	ids     map[uuid.UUID]int
	tx      uint64
	changed chan struct{} // closed and replaced after every commit
}

// Option configures a Store.
type Option func(*Store)

// WithLimits sets the append limits (eventstore defaults otherwise).
func WithLimits(l eventstore.Limits) Option { return func(s *Store) { s.limits = l } }

// WithClock sets the clock used for RecordedAt.
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// New returns an empty store.
func New(opts ...Option) *Store {
	s := &Store{
		now:     time.Now,
		streams: make(map[string][]int),
		ids:     make(map[uuid.UUID]int),
		changed: make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

var _ eventstore.Store = (*Store)(nil)

// Append implements eventstore.Store.
func (s *Store) Append(ctx context.Context, streamID string, expected eventstore.ExpectedVersion, events ...eventstore.Event) (eventstore.AppendResult, error) {
	return s.AppendMulti(ctx, eventstore.StreamAppend{StreamID: streamID, Expected: expected, Events: events})
}

// AppendMulti implements eventstore.Store.
func (s *Store) AppendMulti(ctx context.Context, appends ...eventstore.StreamAppend) (eventstore.AppendResult, error) {
	if err := ctx.Err(); err != nil {
		return eventstore.AppendResult{}, err
	}
	appends, err := s.limits.PrepareAppends(appends)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()

	if res, dup, err := s.duplicateLocked(appends); err != nil || dup {
		return res, err
	}
	for _, a := range appends {
		cur := int64(len(s.streams[a.StreamID]))
		if !a.Expected.Check(cur) {
			return eventstore.AppendResult{}, &eventstore.ConcurrencyError{Stream: a.StreamID, Expected: a.Expected, Actual: cur}
		}
	}
	s.tx++
	now := s.now().UTC()
	res := eventstore.AppendResult{Streams: make([]eventstore.StreamResult, len(appends))}
	for i, a := range appends {
		idx := s.streams[a.StreamID]
		for _, e := range a.Events {
			e.Data = slices.Clone(e.Data)
			e.Metadata = e.Metadata.Clone()
			rec := eventstore.Record{
				Event:      e,
				StreamID:   a.StreamID,
				Version:    int64(len(idx)) + 1,
				Position:   eventstore.Position{Tx: s.tx, Seq: uint64(len(s.all)) + 1},
				RecordedAt: now,
			}
			s.ids[e.ID] = len(s.all)
			idx = append(idx, len(s.all))
			s.all = append(s.all, rec)
			res.Position = rec.Position
		}
		s.streams[a.StreamID] = idx
		res.Streams[i] = eventstore.StreamResult{StreamID: a.StreamID, Version: int64(len(idx))}
	}
	close(s.changed)
	s.changed = make(chan struct{})
	return res, nil
}

// duplicateLocked reports whether appends repeat an earlier append exactly
// (then it returns that append's result), or fails when some of their event
// IDs are stored elsewhere.
func (s *Store) duplicateLocked(appends []eventstore.StreamAppend) (eventstore.AppendResult, bool, error) {
	found, total := 0, 0
	for _, a := range appends {
		for _, e := range a.Events {
			total++
			if _, ok := s.ids[e.ID]; ok {
				found++
			}
		}
	}
	if found == 0 {
		return eventstore.AppendResult{}, false, nil
	}
	res := eventstore.AppendResult{Duplicate: true, Streams: make([]eventstore.StreamResult, len(appends))}
	for i, a := range appends {
		var prev int64
		for j, e := range a.Events {
			at, ok := s.ids[e.ID]
			if !ok {
				return eventstore.AppendResult{}, false, firstStored(s, appends)
			}
			rec := s.all[at]
			// A repeat is the same request: same stream, consecutive
			// versions, same types and payloads (metadata may differ).
			if rec.StreamID != a.StreamID || (j > 0 && rec.Version != prev+1) || rec.Type != e.Type || !bytes.Equal(rec.Data, e.Data) {
				return eventstore.AppendResult{}, false, &eventstore.DuplicateEventError{EventID: e.ID, Stream: rec.StreamID}
			}
			prev = rec.Version
			if res.Position.Before(rec.Position) {
				res.Position = rec.Position
			}
		}
		res.Streams[i] = eventstore.StreamResult{StreamID: a.StreamID, Version: prev}
	}
	return res, true, nil
}

func firstStored(s *Store, appends []eventstore.StreamAppend) error {
	for _, a := range appends {
		for _, e := range a.Events {
			if at, ok := s.ids[e.ID]; ok {
				return &eventstore.DuplicateEventError{EventID: e.ID, Stream: s.all[at].StreamID}
			}
		}
	}
	return nil
}

// ReadStream implements eventstore.Store.
func (s *Store) ReadStream(ctx context.Context, streamID string, from int64) iter.Seq2[eventstore.Record, error] {
	return s.readStream(ctx, streamID, from, true)
}

// ReadStreamBackward implements eventstore.Store.
func (s *Store) ReadStreamBackward(ctx context.Context, streamID string, from int64) iter.Seq2[eventstore.Record, error] {
	return s.readStream(ctx, streamID, from, false)
}

func (s *Store) readStream(ctx context.Context, streamID string, from int64, forward bool) iter.Seq2[eventstore.Record, error] {
	return func(yield func(eventstore.Record, error) bool) {
		if err := s.limits.ValidateStreamID(streamID); err != nil {
			yield(eventstore.Record{}, err)
			return
		}
		s.mu.RLock()
		idx := s.streams[streamID]
		s.mu.RUnlock()
		// idx is append-only: the prefix we hold never changes.
		if len(idx) == 0 {
			yield(eventstore.Record{}, &eventstore.StreamNotFoundError{Stream: streamID})
			return
		}
		n := int64(len(idx))
		next := func(v int64) (eventstore.Record, bool) {
			if err := ctx.Err(); err != nil {
				yield(eventstore.Record{}, err)
				return eventstore.Record{}, false
			}
			s.mu.RLock()
			r := s.all[idx[v-1]]
			s.mu.RUnlock()
			return r, true
		}
		if forward {
			for v := max(from, 1); v <= n; v++ {
				r, ok := next(v)
				if !ok || !yield(r, nil) {
					return
				}
			}
			return
		}
		start := from
		if start < 1 || start > n {
			start = n
		}
		for v := start; v >= 1; v-- {
			r, ok := next(v)
			if !ok || !yield(r, nil) {
				return
			}
		}
	}
}

// StreamVersion implements eventstore.Store.
func (s *Store) StreamVersion(ctx context.Context, streamID string) (int64, error) {
	if err := s.limits.ValidateStreamID(streamID); err != nil {
		return 0, err
	}
	s.mu.RLock()
	n := len(s.streams[streamID])
	s.mu.RUnlock()
	if n == 0 {
		return 0, &eventstore.StreamNotFoundError{Stream: streamID}
	}
	return int64(n), nil
}

// ReadEvent implements eventstore.Store.
func (s *Store) ReadEvent(ctx context.Context, id uuid.UUID) (eventstore.Record, error) {
	if err := ctx.Err(); err != nil {
		return eventstore.Record{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	at, ok := s.ids[id]
	if !ok {
		return eventstore.Record{}, fmt.Errorf("%w: %s", eventstore.ErrEventNotFound, id)
	}
	return s.all[at], nil
}

// ReadAll implements eventstore.Store.
func (s *Store) ReadAll(ctx context.Context, after eventstore.Position, limit int) ([]eventstore.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = eventstore.DefaultBatchSize
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	i, _ := slices.BinarySearchFunc(s.all, after, func(r eventstore.Record, p eventstore.Position) int {
		return r.Position.Compare(p)
	})
	for i < len(s.all) && !s.all[i].Position.After(after) {
		i++
	}
	end := len(s.all)
	if limit < end-i { // no i+limit: it overflows for huge limits
		end = i + limit
	}
	return slices.Clone(s.all[i:end]), nil
}

// Head implements eventstore.Store.
func (s *Store) Head(ctx context.Context) (eventstore.Position, error) {
	if err := ctx.Err(); err != nil {
		return eventstore.Position{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if len(s.all) == 0 {
		return eventstore.Position{}, nil
	}
	return s.all[len(s.all)-1].Position, nil
}

// Subscribe implements eventstore.Store.
func (s *Store) Subscribe(ctx context.Context, after eventstore.Position) iter.Seq2[eventstore.Record, error] {
	return eventstore.CatchUp(ctx, s, after, eventstore.DefaultBatchSize, s.wait)
}

func (s *Store) wait(ctx context.Context, after eventstore.Position) error {
	s.mu.RLock()
	ch := s.changed
	ahead := len(s.all) > 0 && s.all[len(s.all)-1].Position.After(after)
	s.mu.RUnlock()
	if ahead {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// FeedLag implements the lag report of stores whose feed can trail their
// writes; in memory it is always zero.
func (s *Store) FeedLag(context.Context) (eventstore.FeedLag, error) {
	return eventstore.FeedLag{}, nil
}
