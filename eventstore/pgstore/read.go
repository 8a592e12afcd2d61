package pgstore

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"math"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/eskit/eskit/eventstore"
)

// scanRecord reads one row of recordCols.
func scanRecord(row pgx.CollectableRow) (eventstore.Record, error) {
	var (
		r       eventstore.Record
		tx, seq int64
		md      []byte
	)
	if err := row.Scan(&tx, &seq, &r.ID, &r.StreamID, &r.Version, &r.Type, &r.Data, &md, &r.RecordedAt); err != nil {
		return eventstore.Record{}, err
	}
	if md != nil {
		m, err := decodeMetadata(md)
		if err != nil {
			return eventstore.Record{}, err
		}
		r.Metadata = m
	}
	r.Position = eventstore.Position{Tx: uint64(tx), Seq: uint64(seq)}
	r.RecordedAt = r.RecordedAt.UTC()
	return r, nil
}

func (s *Store) queryRecords(ctx context.Context, what, sql string, args ...any) ([]eventstore.Record, error) {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %s: %w", what, transient(err))
	}
	recs, err := pgx.CollectRows(rows, scanRecord)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %s: %w", what, transient(err))
	}
	return recs, nil
}

// ReadStream implements eventstore.Store. It reads the stream in pages (see
// WithReadBatch) and holds no connection while the caller handles records.
func (s *Store) ReadStream(ctx context.Context, streamID string, from int64) iter.Seq2[eventstore.Record, error] {
	return s.readStream(ctx, streamID, max(from, 1), true)
}

// ReadStreamBackward implements eventstore.Store.
func (s *Store) ReadStreamBackward(ctx context.Context, streamID string, from int64) iter.Seq2[eventstore.Record, error] {
	if from < 1 {
		from = math.MaxInt64
	}
	return s.readStream(ctx, streamID, from, false)
}

func (s *Store) readStream(ctx context.Context, streamID string, from int64, forward bool) iter.Seq2[eventstore.Record, error] {
	return func(yield func(eventstore.Record, error) bool) {
		if err := s.checkOpen(); err != nil {
			yield(eventstore.Record{}, err)
			return
		}
		if err := s.limits.ValidateStreamID(streamID); err != nil {
			yield(eventstore.Record{}, err)
			return
		}
		sql := s.q.readStream
		if !forward {
			sql = s.q.readBackward
		}
		next, first := from, true
		for {
			recs, err := s.queryRecords(ctx, "read stream", sql, streamID, next, s.batch)
			if err != nil {
				yield(eventstore.Record{}, err)
				return
			}
			if first && len(recs) == 0 {
				exists := false
				if forward && from > 1 {
					if err := s.pool.QueryRow(ctx, s.q.streamExists, streamID).Scan(&exists); err != nil {
						yield(eventstore.Record{}, fmt.Errorf("pgstore: read stream: %w", transient(err)))
						return
					}
				}
				if !exists {
					yield(eventstore.Record{}, &eventstore.StreamNotFoundError{Stream: streamID})
				}
				return
			}
			first = false
			if forward {
				s.known.note(streamID, recs[len(recs)-1].Version)
			} else {
				s.known.note(streamID, recs[0].Version)
			}
			for _, r := range recs {
				if !yield(r, nil) {
					return
				}
			}
			if len(recs) < s.batch {
				return
			}
			last := recs[len(recs)-1].Version
			if forward {
				next = last + 1
			} else {
				if last <= 1 {
					return
				}
				next = last - 1
			}
		}
	}
}

// StreamVersion implements eventstore.Store.
func (s *Store) StreamVersion(ctx context.Context, streamID string) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	if err := s.limits.ValidateStreamID(streamID); err != nil {
		return 0, err
	}
	var v int64
	err := s.pool.QueryRow(ctx, s.q.streamVersion, streamID).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, &eventstore.StreamNotFoundError{Stream: streamID}
	}
	if err != nil {
		return 0, fmt.Errorf("pgstore: stream version: %w", transient(err))
	}
	s.known.note(streamID, v)
	return v, nil
}

// ReadEvent implements eventstore.Store.
func (s *Store) ReadEvent(ctx context.Context, id uuid.UUID) (eventstore.Record, error) {
	if err := s.checkOpen(); err != nil {
		return eventstore.Record{}, err
	}
	recs, err := s.queryRecords(ctx, "read event", s.q.readEvent, id)
	if err != nil {
		return eventstore.Record{}, err
	}
	if len(recs) == 0 {
		return eventstore.Record{}, fmt.Errorf("%w: %s", eventstore.ErrEventNotFound, id)
	}
	return recs[0], nil
}

// ReadAll implements eventstore.Store. Records come in (transaction ID,
// sequence) order, and only those written by transactions older than every
// transaction still running (the snapshot's xmin): any row that could still
// commit has a larger position than everything returned, so a reader that
// resumes after the last Position it saw never skips one. A long-running
// transaction holding an ID therefore delays the feed (see FeedLag) but
// never reorders it.
func (s *Store) ReadAll(ctx context.Context, after eventstore.Position, limit int) ([]eventstore.Record, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = eventstore.DefaultBatchSize
	}
	tx, seq := clampPosition(after)
	return s.queryRecords(ctx, "read feed", s.q.readAll, tx, seq, limit)
}

// clampPosition maps a Position onto the table's signed columns. Positions
// beyond them are after every stored row.
func clampPosition(p eventstore.Position) (int64, int64) {
	if p.Tx > math.MaxInt64 {
		return math.MaxInt64, math.MaxInt64
	}
	return int64(p.Tx), int64(min(p.Seq, math.MaxInt64))
}

// Head implements eventstore.Store: the Position of the last record ReadAll
// can return now.
func (s *Store) Head(ctx context.Context) (eventstore.Position, error) {
	if err := s.checkOpen(); err != nil {
		return eventstore.Position{}, err
	}
	var tx, seq int64
	err := s.pool.QueryRow(ctx, s.q.head).Scan(&tx, &seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return eventstore.Position{}, nil
	}
	if err != nil {
		return eventstore.Position{}, fmt.Errorf("pgstore: head: %w", transient(err))
	}
	return eventstore.Position{Tx: uint64(tx), Seq: uint64(seq)}, nil
}

// FeedLag reports how far the feed's safe point trails the newest commit:
// the number of committed events that ReadAll cannot return yet because an
// older transaction is still running, and how long the oldest of them has
// waited (measured from its transaction's start). A lag that keeps growing
// points at a long-running transaction holding a transaction ID.
func (s *Store) FeedLag(ctx context.Context) (eventstore.FeedLag, error) {
	if err := s.checkOpen(); err != nil {
		return eventstore.FeedLag{}, err
	}
	var (
		n   int64
		age float64
	)
	if err := s.pool.QueryRow(ctx, s.q.lag).Scan(&n, &age); err != nil {
		return eventstore.FeedLag{}, fmt.Errorf("pgstore: feed lag: %w", transient(err))
	}
	if n == 0 {
		return eventstore.FeedLag{}, nil
	}
	return eventstore.FeedLag{Events: n, Age: time.Duration(age * float64(time.Second))}, nil
}
