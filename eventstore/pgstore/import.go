package pgstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/eskit/eskit/eventstore"
)

// Import bulk-loads new streams with COPY, in one transaction: all of them
// or none. Every stream must be new: its Expected must be NoStream or Any,
// and a stream that already has events fails the import with a
// *eventstore.ConcurrencyError. Event IDs must be new too (a stored one
// fails it with a *eventstore.DuplicateEventError); Import is not
// idempotent. Streams and events are validated like appends, except that
// the limit on events per append does not apply.
//
// Import takes no stream locks. It keeps the feed's per-stream order
// through the unique (stream, version) key instead: an append racing with
// the import on one of its streams either commits first (then the import
// fails) or fails with a retryable *eventstore.ConcurrencyError, and an
// append that sees the imported events runs after the import committed, so
// its transaction ID is larger.
func (s *Store) Import(ctx context.Context, streams []eventstore.StreamAppend) (eventstore.AppendResult, error) {
	if err := s.checkOpen(); err != nil {
		return eventstore.AppendResult{}, err
	}
	lim := s.limits
	lim.MaxAppendEvents = math.MaxInt
	streams, err := lim.PrepareAppends(streams)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	ids := make([]string, len(streams))
	total := 0
	for i, a := range streams {
		if a.Expected != eventstore.NoStream && a.Expected != eventstore.Any {
			return eventstore.AppendResult{}, &eventstore.InvalidArgumentError{Field: "expected version",
				Reason: fmt.Sprintf("import creates streams: stream %q expects %s, want no-stream or any", a.StreamID, a.Expected)}
		}
		ids[i] = a.StreamID
		total += len(a.Events)
	}

	var res eventstore.AppendResult
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var xid int64
		if err := tx.QueryRow(ctx, `SELECT pg_current_xact_id()::text::bigint`).Scan(&xid); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, s.q.existing, ids)
		if err != nil {
			return err
		}
		var (
			stream  string
			version int64
		)
		found := false
		_, err = pgx.ForEachRow(rows, []any{&stream, &version}, func() error {
			found = true
			return nil
		})
		if err != nil {
			return err
		}
		if found {
			return &eventstore.ConcurrencyError{Stream: stream, Expected: expectedOf(streams, stream), Actual: version}
		}
		src := &importSource{xid: xid, streams: streams}
		n, err := tx.CopyFrom(ctx, pgx.Identifier{s.schema, "events"},
			[]string{"tx", "id", "stream_id", "version", "event_type", "data", "metadata"}, src)
		if err != nil {
			return err
		}
		if n != int64(total) {
			return fmt.Errorf("copied %d of %d events", n, total)
		}
		var seq int64
		if err := tx.QueryRow(ctx, s.q.lastSeq).Scan(&seq); err != nil {
			return err
		}
		res.Position = eventstore.Position{Tx: uint64(xid), Seq: uint64(seq)}
		return nil
	})
	if err != nil {
		return eventstore.AppendResult{}, importError(err, streams)
	}
	res.Streams = make([]eventstore.StreamResult, len(streams))
	for i, a := range streams {
		res.Streams[i] = eventstore.StreamResult{StreamID: a.StreamID, Version: int64(len(a.Events))}
	}
	s.committed()
	return res, nil
}

func importError(err error, streams []eventstore.StreamAppend) error {
	var ce *eventstore.ConcurrencyError
	if errors.As(err, &ce) {
		return ce
	}
	if uerr := uniqueViolation(err, streams, "the stream was written concurrently with the import"); uerr != nil {
		return uerr
	}
	return fmt.Errorf("pgstore: import: %w", err)
}

// idFromDetail extracts the ID from `Key (id)=(<uuid>) already exists.`
func idFromDetail(detail string) (uuid.UUID, bool) {
	_, rest, ok := strings.Cut(detail, ")=(")
	if !ok {
		return uuid.UUID{}, false
	}
	v, _, _ := strings.Cut(rest, ")")
	id, err := uuid.Parse(v)
	return id, err == nil
}

// importSource feeds CopyFrom from the streams, event by event.
type importSource struct {
	xid     int64
	streams []eventstore.StreamAppend
	i, j    int
	row     [7]any
	err     error
}

func (c *importSource) Next() bool {
	for c.i < len(c.streams) && c.j >= len(c.streams[c.i].Events) {
		c.i, c.j = c.i+1, 0
	}
	if c.i >= len(c.streams) {
		return false
	}
	a := c.streams[c.i]
	e := a.Events[c.j]
	c.j++
	md, err := encodeMetadata(e.Metadata)
	if err != nil {
		c.err = err
		return false
	}
	// The ID as a pgtype.UUID: COPY encodes it in binary at once, where a
	// uuid.UUID (a driver.Valuer of its text form) would first fail to
	// encode in binary and then go through text.
	c.row = [7]any{c.xid, pgtype.UUID{Bytes: e.ID, Valid: true}, a.StreamID, int64(c.j), e.Type, e.Data, md}
	return true
}

func (c *importSource) Values() ([]any, error) { return c.row[:], nil }

func (c *importSource) Err() error { return c.err }
