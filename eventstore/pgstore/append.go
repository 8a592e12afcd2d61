package pgstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/eskit/eskit/eventstore"
)

// Result kinds of append_events.
const (
	kindAppended  = 0
	kindConflict  = 1
	kindDuplicate = 2
	kindTxOrder   = 3
)

// Constraint names of the events table, used to classify unique violations.
const (
	constraintStreamVersion = "events_stream_version_key"
	constraintEventID       = "events_id_key"
)

// querier is what appends need from a pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Append implements eventstore.Store.
func (s *Store) Append(ctx context.Context, streamID string, expected eventstore.ExpectedVersion, events ...eventstore.Event) (eventstore.AppendResult, error) {
	return s.AppendMulti(ctx, eventstore.StreamAppend{StreamID: streamID, Expected: expected, Events: events})
}

// AppendMulti implements eventstore.Store. It takes one round trip. An
// append to one stream (the common case) sends two pipelined statements
// that run as one implicit transaction: the stream lock, then one INSERT
// whose condition is the version check (see appendSingle). Appends to
// several streams take the stream locks, the idempotency check, the
// version checks and the inserts in one call of the schema's append_events
// function.
func (s *Store) AppendMulti(ctx context.Context, appends ...eventstore.StreamAppend) (eventstore.AppendResult, error) {
	ctx, span, start := s.tel.start(ctx, appends)
	res, err := s.appendMulti(ctx, appends)
	s.tel.end(ctx, span, start, appends, res, err)
	return res, err
}

func (s *Store) appendMulti(ctx context.Context, appends []eventstore.StreamAppend) (eventstore.AppendResult, error) {
	var (
		res eventstore.AppendResult
		err error
	)
	if len(appends) == 1 {
		res, err = s.appendSingle(ctx, appends[0])
	} else {
		res, err = s.appendWith(ctx, s.pool, appends)
	}
	err = outcomeOf(err)
	if err == nil && res.Duplicate {
		if rerr := s.checkRepeat(ctx, appends); rerr != nil {
			return eventstore.AppendResult{}, rerr
		}
	}
	if err == nil && !res.Duplicate {
		s.committed()
	}
	if err == nil {
		for _, r := range res.Streams {
			s.known.note(r.StreamID, r.Version)
		}
	}
	if err != nil {
		s.fillDuplicateStream(ctx, err)
	}
	return res, err
}

// AppendTx appends inside the caller's transaction, so that business rows
// and events commit (or roll back) together. It has AppendMulti's
// semantics, plus one more retryable conflict: when tx already holds a
// transaction ID older than the last event of a stream it writes, appending
// would break the feed's per-stream order, and AppendTx returns a
// *eventstore.ConcurrencyError with a Reason. The caller should then roll
// back and retry the whole transaction.
//
// Every error AppendTx returns leaves tx usable: the append runs under a
// savepoint (sent in the same round trip as the append), rolled back when
// the append fails — a version conflict, a duplicate, or a unique-key
// violation raised by a writer that raced it (an Import, a REPEATABLE READ
// snapshot that did not see a newer event).
//
// Subscribers learn of the events when they next poll; call Notify after
// committing to wake them at once, or use InTx, which does both.
func (s *Store) AppendTx(ctx context.Context, tx pgx.Tx, appends ...eventstore.StreamAppend) (eventstore.AppendResult, error) {
	if tx == nil {
		return eventstore.AppendResult{}, &eventstore.InvalidArgumentError{Field: "tx", Reason: "nil"}
	}
	ctx, span, start := s.tel.start(ctx, appends)
	sq := &savepointQuerier{tx: tx}
	res, err := s.appendWith(ctx, sq, appends)
	if err != nil && sq.set {
		if _, rerr := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT "+appendSavepoint); rerr != nil {
			err = fmt.Errorf("%w (and rolling back to the append's savepoint failed: %w)", err, rerr)
		}
	}
	if err == nil && res.Duplicate {
		if err = s.checkRepeat(ctx, appends); err != nil {
			res = eventstore.AppendResult{}
		}
	}
	s.tel.end(ctx, span, start, appends, res, err)
	return res, err
}

// AppendTxRecords is AppendTx, and also returns the records it appended,
// with their positions and recording times as the transaction commits
// them (read back in tx): for work done in the append's own transaction,
// such as inline projections (projection.Inline). A duplicate append
// returns no records (they were appended, and handled, before).
func (s *Store) AppendTxRecords(ctx context.Context, tx pgx.Tx, appends ...eventstore.StreamAppend) ([]eventstore.Record, eventstore.AppendResult, error) {
	// The events' IDs as the append gives them (new ones for events
	// without): the records are read back by them.
	prepared, err := s.limits.PrepareAppends(appends)
	if err != nil {
		return nil, eventstore.AppendResult{}, err
	}
	appends = prepared
	res, err := s.AppendTx(ctx, tx, appends...)
	if err != nil || res.Duplicate {
		return nil, res, err
	}
	var ids []uuid.UUID
	for _, a := range appends {
		for _, e := range a.Events {
			ids = append(ids, e.ID)
		}
	}
	rows, err := tx.Query(ctx, s.q.recordsByID, ids)
	if err != nil {
		return nil, res, fmt.Errorf("pgstore: read the appended records: %w", err)
	}
	recs, err := pgx.CollectRows(rows, scanRecord)
	if err != nil {
		return nil, res, fmt.Errorf("pgstore: read the appended records: %w", err)
	}
	return recs, res, nil
}

// appendSavepoint names the savepoint AppendTx takes around an append.
const appendSavepoint = "eskit_append"

// savepointQuerier runs a query in a pipelined batch between SAVEPOINT and
// RELEASE SAVEPOINT: one round trip, and a failed append can be rolled back
// to the savepoint without aborting the caller's transaction.
type savepointQuerier struct {
	tx  pgx.Tx
	set bool // the savepoint was taken (and not released)
}

func (q *savepointQuerier) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	b := &pgx.Batch{}
	b.Queue("SAVEPOINT " + appendSavepoint)
	b.Queue(sql, args...)
	b.Queue("RELEASE SAVEPOINT " + appendSavepoint)
	br := q.tx.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		_ = br.Close()
		return nil, err
	}
	q.set = true
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return nil, err
	}
	return &savepointRows{Rows: rows, br: br, q: q}, nil
}

// savepointRows releases the savepoint when the append's rows are read to
// the end without an error.
type savepointRows struct {
	pgx.Rows
	br     pgx.BatchResults
	q      *savepointQuerier
	closed bool
	err    error
}

func (r *savepointRows) Close() {
	if r.closed {
		return
	}
	r.closed = true
	r.Rows.Close()
	if r.err = r.Rows.Err(); r.err == nil {
		if _, err := r.br.Exec(); err == nil {
			r.q.set = false // released
		} else {
			r.err = err
		}
	}
	if err := r.br.Close(); r.err == nil && err != nil {
		r.err = err
	}
}

func (r *savepointRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.Close()
	return false
}

func (r *savepointRows) Err() error {
	if r.closed {
		return r.err
	}
	return r.Rows.Err()
}

// InTx runs fn in a new transaction, commits it when fn returns nil (rolls
// it back otherwise) and then wakes subscribers. Use AppendTx inside fn.
func (s *Store) InTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if err := pgx.BeginFunc(ctx, s.pool, fn); err != nil {
		return err
	}
	s.committed()
	return nil
}

// Notify wakes the store's subscribers, in this process and (unless
// WithNotify(false)) in others. Call it after committing a transaction in
// which AppendTx wrote events.
func (s *Store) Notify() { s.committed() }

// appendArgs are append_events' parameters.
type appendArgs struct {
	streams  []string
	expected []int64
	evStream []int32
	evOffset []int32
	ids      []pgtype.UUID // binary at once (a uuid.UUID would go through text)
	types    []string
	data     [][]byte
	metadata [][]byte
}

func buildArgs(appends []eventstore.StreamAppend) (appendArgs, error) {
	n := 0
	for _, a := range appends {
		n += len(a.Events)
	}
	args := appendArgs{
		streams:  make([]string, len(appends)),
		expected: make([]int64, len(appends)),
		evStream: make([]int32, 0, n),
		evOffset: make([]int32, 0, n),
		ids:      make([]pgtype.UUID, 0, n),
		types:    make([]string, 0, n),
		data:     make([][]byte, 0, n),
		metadata: make([][]byte, 0, n),
	}
	for i, a := range appends {
		args.streams[i] = a.StreamID
		args.expected[i] = int64(a.Expected)
		for j, e := range a.Events {
			md, err := encodeMetadata(e.Metadata)
			if err != nil {
				return appendArgs{}, &eventstore.InvalidArgumentError{Field: fmt.Sprintf("events[%d].Metadata", j), Reason: err.Error()}
			}
			args.evStream = append(args.evStream, int32(i+1))
			args.evOffset = append(args.evOffset, int32(j+1))
			args.ids = append(args.ids, pgtype.UUID{Bytes: e.ID, Valid: true})
			args.types = append(args.types, e.Type)
			args.data = append(args.data, e.Data)
			args.metadata = append(args.metadata, md)
		}
	}
	return args, nil
}

// encodeMetadata encodes metadata as a JSON object; nil metadata is NULL.
// Metadata is stored as bytea rather than jsonb: writes cost the same, and
// reading it back is cheaper (no jsonb-to-text conversion on the server).
func encodeMetadata(md eventstore.Metadata) ([]byte, error) {
	if md == nil {
		return nil, nil
	}
	return json.Marshal(md)
}

type appendRow struct {
	kind    int16
	stream  string
	id      pgtype.UUID
	version int64
	tx      pgtype.Int8
	seq     pgtype.Int8
}

func (s *Store) appendWith(ctx context.Context, q querier, appends []eventstore.StreamAppend) (eventstore.AppendResult, error) {
	if err := s.checkOpen(); err != nil {
		return eventstore.AppendResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return eventstore.AppendResult{}, err
	}
	appends, err := s.limits.PrepareAppends(appends)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	args, err := buildArgs(appends)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	rows, err := q.Query(ctx, s.q.append, args.streams, args.expected, args.evStream, args.evOffset,
		args.ids, args.types, args.data, args.metadata)
	if err != nil {
		return eventstore.AppendResult{}, s.appendError(err, appends)
	}
	var out []appendRow
	for rows.Next() {
		var r appendRow
		if err := rows.Scan(&r.kind, &r.stream, &r.id, &r.version, &r.tx, &r.seq); err != nil {
			rows.Close()
			return eventstore.AppendResult{}, fmt.Errorf("pgstore: append: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return eventstore.AppendResult{}, s.appendError(err, appends)
	}
	if len(out) == 0 {
		return eventstore.AppendResult{}, errors.New("pgstore: append: append_events returned nothing")
	}
	switch out[0].kind {
	case kindAppended:
		return appendedResult(appends, out), nil
	case kindConflict:
		r := out[0]
		return eventstore.AppendResult{}, &eventstore.ConcurrencyError{Stream: r.stream, Expected: expectedOf(appends, r.stream), Actual: r.version}
	case kindTxOrder:
		r := out[0]
		return eventstore.AppendResult{}, &eventstore.ConcurrencyError{
			Stream: r.stream, Expected: expectedOf(appends, r.stream), Actual: r.version,
			Reason: fmt.Sprintf("the transaction's ID %d is older than that of the stream's last event (%d): appending would break the feed's per-stream order; retry the transaction", r.seq.Int64, r.tx.Int64),
		}
	case kindDuplicate:
		return duplicateResult(appends, out)
	}
	return eventstore.AppendResult{}, fmt.Errorf("pgstore: append: unexpected result kind %d", out[0].kind)
}

func expectedOf(appends []eventstore.StreamAppend, stream string) eventstore.ExpectedVersion {
	for _, a := range appends {
		if a.StreamID == stream {
			return a.Expected
		}
	}
	return eventstore.Any
}

func appendedResult(appends []eventstore.StreamAppend, rows []appendRow) eventstore.AppendResult {
	versions := make(map[string]int64, len(rows))
	var pos eventstore.Position
	for _, r := range rows {
		versions[r.stream] = r.version
		p := eventstore.Position{Tx: uint64(r.tx.Int64), Seq: uint64(r.seq.Int64)}
		if pos.Before(p) {
			pos = p
		}
	}
	res := eventstore.AppendResult{Streams: make([]eventstore.StreamResult, len(appends)), Position: pos}
	for i, a := range appends {
		res.Streams[i] = eventstore.StreamResult{StreamID: a.StreamID, Version: versions[a.StreamID]}
	}
	return res
}

// duplicateResult decides, from the stored copies of the append's event IDs,
// whether the append repeats an earlier one exactly (every event stored, in
// the same streams, consecutively and in order) or clashes with it.
func duplicateResult(appends []eventstore.StreamAppend, rows []appendRow) (eventstore.AppendResult, error) {
	stored := make(map[uuid.UUID]appendRow, len(rows))
	for _, r := range rows {
		stored[uuid.UUID(r.id.Bytes)] = r
	}
	firstStored := func() error {
		for _, a := range appends {
			for _, e := range a.Events {
				if r, ok := stored[e.ID]; ok {
					return &eventstore.DuplicateEventError{EventID: e.ID, Stream: r.stream}
				}
			}
		}
		return nil
	}
	res := eventstore.AppendResult{Duplicate: true, Streams: make([]eventstore.StreamResult, len(appends))}
	for i, a := range appends {
		var prev int64
		for j, e := range a.Events {
			r, ok := stored[e.ID]
			if !ok {
				return eventstore.AppendResult{}, firstStored()
			}
			if r.stream != a.StreamID || (j > 0 && r.version != prev+1) {
				return eventstore.AppendResult{}, &eventstore.DuplicateEventError{EventID: e.ID, Stream: r.stream}
			}
			prev = r.version
			p := eventstore.Position{Tx: uint64(r.tx.Int64), Seq: uint64(r.seq.Int64)}
			if res.Position.Before(p) {
				res.Position = p
			}
		}
		res.Streams[i] = eventstore.StreamResult{StreamID: a.StreamID, Version: prev}
	}
	return res, nil
}

// appendError turns a failed append call into the store's errors. A unique
// violation on (stream, version) comes from a writer that bypassed the
// stream locks (a bulk import) and is a retryable conflict. One on the event
// ID means another append committed that ID meanwhile; appends of the same
// stream are serialised by its lock, so it cannot be a repeat of this one:
// a *eventstore.DuplicateEventError. Context ends keep their error.
func (s *Store) appendError(err error, appends []eventstore.StreamAppend) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == pgerrcode.SerializationFailure || pgErr.Code == pgerrcode.DeadlockDetected) {
		// A serialization failure or a deadlock: nothing was written.
		return fmt.Errorf("pgstore: append: %w: %w", eventstore.ErrTransient, err)
	}
	if uerr := uniqueViolation(err, appends, "another writer (such as a bulk import) wrote the stream concurrently"); uerr != nil {
		return uerr
	}
	return fmt.Errorf("pgstore: append: %w", err)
}

// uniqueViolation explains a unique-key violation of the events table: on
// (stream, version), a *eventstore.ConcurrencyError with reason (another
// writer took a version of one of appends' streams); on the event ID, a
// *eventstore.DuplicateEventError. Other errors give nil.
func uniqueViolation(err error, appends []eventstore.StreamAppend, reason string) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != pgerrcode.UniqueViolation {
		return nil
	}
	switch pgErr.ConstraintName {
	case constraintStreamVersion:
		stream := streamFromDetail(pgErr.Detail)
		return &eventstore.ConcurrencyError{Stream: stream, Expected: expectedOf(appends, stream), Actual: -1, Reason: reason}
	case constraintEventID:
		if id, ok := idFromDetail(pgErr.Detail); ok {
			return &eventstore.DuplicateEventError{EventID: id}
		}
		return fmt.Errorf("%w: %s", eventstore.ErrDuplicateEvent, pgErr.Detail)
	}
	return nil
}

// checkRepeat makes sure an append whose event IDs are all stored is the
// same request as the one that stored them: same event types and payloads
// (metadata may differ: a retry carries new trace context). Another
// request reusing the IDs is a *eventstore.DuplicateEventError, never a
// repeat.
func (s *Store) checkRepeat(ctx context.Context, appends []eventstore.StreamAppend) error {
	var ids []uuid.UUID
	want := map[uuid.UUID]eventstore.Event{}
	for _, a := range appends {
		for _, e := range a.Events {
			ids = append(ids, e.ID)
			want[e.ID] = e
		}
	}
	rows, err := s.pool.Query(ctx, s.q.eventBodies, ids)
	if err != nil {
		return fmt.Errorf("pgstore: append: read the stored copies of a repeated append: %w", err)
	}
	var (
		id     uuid.UUID
		stream string
		typ    string
		data   []byte
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &stream, &typ, &data}, func() error {
		if e := want[id]; e.Type != typ || !bytes.Equal(e.Data, data) {
			return &eventstore.DuplicateEventError{EventID: id, Stream: stream}
		}
		return nil
	})
	var de *eventstore.DuplicateEventError
	if errors.As(err, &de) {
		return de
	}
	if err != nil {
		return fmt.Errorf("pgstore: append: read the stored copies of a repeated append: %w", err)
	}
	return nil
}

// outcomeOf marks the error of an append that ran in its own (implicit)
// transaction as outcome unknown when it is not the server's answer and
// the request may have reached the server (pgconn.SafeToRetry is false):
// the connection broke while the write was sent or committed, so it may
// have been applied.
func outcomeOf(err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && sessionEnded(pgErr) {
		// The server ended the session (shutdown, terminated): perhaps
		// after the commit, before its answer.
		return &eventstore.OutcomeUnknownError{Err: err}
	}
	if errors.As(err, &pgErr) || pgconn.SafeToRetry(err) || errors.Is(err, eventstore.ErrOutcomeUnknown) ||
		errors.Is(err, eventstore.ErrInvalidArgument) || errors.Is(err, eventstore.ErrConcurrency) ||
		errors.Is(err, eventstore.ErrDuplicateEvent) || errors.Is(err, eventstore.ErrClosed) {
		return err // the server's answer, or nothing was sent
	}
	var nerr net.Error
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return err // never connected: nothing was sent
	}
	if errors.As(err, &nerr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || isClosedConn(err) {
		return &eventstore.OutcomeUnknownError{Err: err}
	}
	return err
}

// sessionEnded reports the server's errors that end the session: a
// connection exception (class 08), or the operator's intervention
// (shutdown, a terminated backend, a server not accepting connections).
func sessionEnded(pgErr *pgconn.PgError) bool {
	return strings.HasPrefix(pgErr.Code, "08") || pgErr.Code == pgerrcode.AdminShutdown ||
		pgErr.Code == pgerrcode.CrashShutdown || pgErr.Code == pgerrcode.CannotConnectNow
}

// transient marks the error of a read as eventstore.ErrTransient when
// the connection was lost or refused (the server down, restarting, or
// terminating the session): a retry can succeed, and nothing was written.
// Other errors, the caller's context ends included, are returned as they
// are.
func transient(err error) error {
	if err == nil || errors.Is(err, eventstore.ErrTransient) {
		return err
	}
	var (
		pgErr *pgconn.PgError
		ce    *pgconn.ConnectError
		nerr  net.Error
	)
	lost := false
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
	case errors.As(err, &pgErr):
		lost = sessionEnded(pgErr)
	default:
		lost = errors.As(err, &ce) || pgconn.SafeToRetry(err) || errors.As(err, &nerr) ||
			errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isClosedConn(err)
	}
	if lost {
		return fmt.Errorf("%w: %w", eventstore.ErrTransient, err)
	}
	return err
}

// isClosedConn reports pgx's errors for a connection that died mid-request.
func isClosedConn(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "conn closed") || strings.Contains(msg, "connection reset") || strings.Contains(msg, "broken pipe")
}

// fillDuplicateStream names the stream of the stored event in a
// *eventstore.DuplicateEventError that lacks it (best effort).
func (s *Store) fillDuplicateStream(ctx context.Context, err error) {
	var de *eventstore.DuplicateEventError
	if !errors.As(err, &de) || de.Stream != "" {
		return
	}
	var stream string
	if s.pool.QueryRow(ctx, s.q.eventStream, de.EventID).Scan(&stream) == nil {
		de.Stream = stream
	}
}

// streamFromDetail extracts the stream ID from a unique violation's detail
// on (stream_id, version): `Key (stream_id, version)=(s, 1) already exists.`
func streamFromDetail(detail string) string {
	_, rest, ok := strings.Cut(detail, ")=(")
	if !ok {
		return ""
	}
	i := strings.LastIndex(rest, ", ")
	if i < 0 {
		return ""
	}
	return rest[:i]
}
