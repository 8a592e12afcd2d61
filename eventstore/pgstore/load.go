package pgstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/snapshot"
)

var _ snapshot.EventLoader = (*Store)(nil)

// The load queries' columns: an event row has its version, payload, type
// and metadata; the snapshot row (event_type NULL) its version, schema
// version, state and taken_at. Every column costs: a load reads nothing
// else (no ID, position or recording time).
const (
	colVersion = iota
	colSchemaVersion
	colData
	colType
	colMetadata
	colTakenAt
	loadColCount
)

// loadQueries returns the SQL of LoadWithSnapshot on table t and the
// snapshots table st. $1 is the stream, $3 the highest version read (and
// of a snapshot used); $2 is the schema version whose snapshots skip
// events in withSnapshot, the first version read in events.
//
// In withSnapshot the snapshot row, if any, comes first: the query is a
// UNION ALL of the snapshot and the events after it, which PostgreSQL
// returns branch after branch (the reader checks it). The events branch
// starts after the snapshot's version only when the snapshot has the
// schema version asked for. Each branch probes the snapshots table's
// primary key itself (no CTE, whose materialisation costs more than a
// second probe of one row): both probes read the statement's one database
// snapshot, so they see the same snapshot row.
func loadQueries(t, st string) (withSnapshot, events string) {
	eventCols := `e.version, NULL::int4, e.data, e.event_type, e.metadata, NULL::timestamptz`
	withSnapshot = `(SELECT s.version, s.schema_version, s.state, NULL::text, NULL::bytea, s.taken_at
 FROM ` + st + ` s WHERE s.stream_id = $1::text AND s.version <= $3::bigint)
UNION ALL
(SELECT ` + eventCols + ` FROM ` + t + ` e
 WHERE e.stream_id = $1::text AND e.version <= $3::bigint
   AND e.version > coalesce((SELECT s.version FROM ` + st + ` s
     WHERE s.stream_id = $1::text AND s.version <= $3::bigint AND s.schema_version = $2::int4), 0)
 ORDER BY e.version)`
	events = `SELECT ` + eventCols + ` FROM ` + t + ` e
WHERE e.stream_id = $1::text AND e.version >= $2::bigint AND e.version <= $3::bigint ORDER BY e.version`
	return withSnapshot, events
}

// LoadWithSnapshot implements snapshot.EventLoader: with snaps nil or the
// snapshot store of the store's own schema (Store.Snapshots, or
// NewSnapshots on the same pool and schema), it reads the stream's
// snapshot and its events after it in one query, and streams the events
// to the caller as they arrive (it holds a pool connection while the
// caller ranges over them). Any other snapshot store is
// errors.ErrUnsupported.
//
// The records carry what a fold needs: StreamID, Version, Type, Data and
// Metadata (their ID, Position and RecordedAt are not read, so zero). They
// share their payload buffers: keep a record's Data only as long as you
// keep the record, and do not change it.
func (s *Store) LoadWithSnapshot(ctx context.Context, snaps snapshot.Store, streamID string, opts snapshot.LoadOptions) (iter.Seq2[eventstore.Record, error], error) {
	if snaps != nil && !s.ownsSnapshots(snaps) {
		return nil, fmt.Errorf("pgstore: %T is not the snapshot store of schema %s: %w", snaps, s.schema, errors.ErrUnsupported)
	}
	maxVersion := opts.MaxVersion
	if maxVersion <= 0 {
		maxVersion = math.MaxInt64
	}
	return func(yield func(eventstore.Record, error) bool) {
		if err := s.checkOpen(); err != nil {
			yield(eventstore.Record{}, err)
			return
		}
		if err := s.limits.ValidateStreamID(streamID); err != nil {
			yield(eventstore.Record{}, err)
			return
		}
		l := loader{s: s, streamID: streamID, opts: opts, maxVersion: maxVersion, yield: yield}
		if snaps == nil {
			l.run(ctx, s.q.loadEvents, 1, false)
			return
		}
		l.run(ctx, s.q.loadWithSnapshot, int64(opts.SchemaVersion), true)
	}, nil
}

// ownsSnapshots reports whether snaps is the snapshot store of the store's
// schema, on its pool.
func (s *Store) ownsSnapshots(snaps snapshot.Store) bool {
	p, ok := snaps.(*Snapshots)
	return ok && p != nil && p.pool == s.pool && p.schema == s.schema
}

// loader is one LoadWithSnapshot in progress.
type loader struct {
	s          *Store
	streamID   string
	opts       snapshot.LoadOptions
	maxVersion int64
	yield      func(eventstore.Record, error) bool

	types    [8]string // event type names seen, the first ntypes
	ntypes   int
	lastType string // the previous event's type
	buf      payloadBuffer
	last     int64 // version of the last event yielded
}

// errLoadRestart stops a load that must start again at the first event.
var errLoadRestart = errors.New("restart at the first event")

// run reads the rows of one query: sql with ($1 stream, $2 arg, $3 max
// version), where arg is the schema version for loadWithSnapshot
// (withSnapshot set) and 1, the first version, for loadEvents.
func (l *loader) run(ctx context.Context, sql string, arg int64, withSnapshot bool) {
	err := l.read(ctx, sql, arg, withSnapshot)
	if errors.Is(err, errLoadRestart) {
		err = l.read(ctx, l.s.q.loadEvents, 1, false)
	}
	if err != nil && !errors.Is(err, errStopped) {
		l.yield(eventstore.Record{}, err)
	}
}

// errStopped reports that the caller stopped ranging.
var errStopped = errors.New("stopped")

// query runs one load query. While the events table is small, it runs
// with sequential scans off (see Store.checkTableSize), in a pipeline:
// still one round trip. done must be called once the rows are read.
func (l *loader) query(ctx context.Context, sql string, arg int64) (rows pgx.Rows, done func() error, err error) {
	if l.s.large.Load() {
		rows, err = l.s.pool.Query(ctx, sql, l.streamID, arg, l.maxVersion)
		return rows, func() error { rows.Close(); return rows.Err() }, err
	}
	b := &pgx.Batch{}
	b.Queue(seqScanOff)
	b.Queue(sql, l.streamID, arg, l.maxVersion)
	br := l.s.pool.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		_ = br.Close()
		return nil, nil, err
	}
	if rows, err = br.Query(); err != nil {
		_ = br.Close()
		return nil, nil, err
	}
	return rows, func() error {
		rows.Close()
		return errors.Join(rows.Err(), br.Close())
	}, nil
}

// seqScanOff turns sequential scans off until the end of the transaction.
const seqScanOff = `SELECT set_config('enable_seqscan', 'off', true)`

func (l *loader) read(ctx context.Context, sql string, arg int64, withSnapshot bool) error {
	rows, done, err := l.query(ctx, sql, arg)
	if err != nil {
		return fmt.Errorf("pgstore: load stream %q: %w", l.streamID, transient(err))
	}
	defer func() { _ = done() }()
	fast := binaryColumns(rows.FieldDescriptions())
	var (
		row         loadRow
		events      int
		sawSnapshot bool
	)
	for rows.Next() {
		if fast {
			err = row.decode(rows.RawValues())
		} else {
			err = row.scan(rows)
		}
		if err != nil {
			return fmt.Errorf("pgstore: load stream %q: %w", l.streamID, transient(err))
		}
		if row.snapshot {
			if sawSnapshot || !withSnapshot {
				return fmt.Errorf("pgstore: load stream %q: unexpected snapshot row", l.streamID)
			}
			sawSnapshot = true
			snap := snapshot.Snapshot{StreamID: l.streamID, Version: row.version, SchemaVersion: int(row.schemaVersion),
				State: append([]byte(nil), row.data...), TakenAt: row.takenAt}
			used := l.opts.Use == nil || l.opts.Use(snap)
			matches := snap.SchemaVersion == l.opts.SchemaVersion
			if events > 0 {
				// Out of order (see below), after events from the
				// first: the snapshot skipped none of them, so it is
				// not one of SchemaVersion, and the events stand.
				continue
			}
			if matches && !used {
				_ = done()
				return errLoadRestart
			}
			continue
		}
		if events == 0 && withSnapshot && !sawSnapshot && row.version > 1 {
			// The events skip a snapshot whose row has not come first
			// (PostgreSQL returns a UNION ALL's branches in order, so
			// this is never seen): read them all instead.
			_ = done()
			return errLoadRestart
		}
		events++
		rec := l.record(&row)
		l.last = rec.Version
		if !l.yield(rec, nil) {
			return errStopped
		}
	}
	if err := done(); err != nil {
		return fmt.Errorf("pgstore: load stream %q: %w", l.streamID, transient(err))
	}
	if events > 0 {
		l.s.known.note(l.streamID, l.last)
		return nil
	}
	// No events: the stream has none (the events query reads from the
	// first), unless a snapshot skipped them, which the rare case of a
	// stream still at its snapshot's version asks the table about.
	exists := false
	if sawSnapshot {
		if err := l.s.pool.QueryRow(ctx, l.s.q.streamExists, l.streamID).Scan(&exists); err != nil {
			return fmt.Errorf("pgstore: load stream %q: %w", l.streamID, transient(err))
		}
	}
	if !exists {
		l.yield(eventstore.Record{}, &eventstore.StreamNotFoundError{Stream: l.streamID})
	}
	return nil
}

// record turns an event row into a record.
func (l *loader) record(row *loadRow) eventstore.Record {
	// Events of a stream mostly share a few types: reuse the name of
	// the previous event's type, or of an earlier one, rather than
	// allocate it again.
	typ := l.lastType
	if typ != string(row.eventType) {
		typ = ""
		for _, t := range l.types[:l.ntypes] {
			if t == string(row.eventType) {
				typ = t
				break
			}
		}
		if typ == "" {
			typ = string(row.eventType)
			if l.ntypes < len(l.types) {
				l.types[l.ntypes] = typ
				l.ntypes++
			}
		}
		l.lastType = typ
	}
	return eventstore.Record{
		Event:    eventstore.Event{Type: typ, Data: l.buf.copy(row.data), Metadata: row.md},
		StreamID: l.streamID,
		Version:  row.version,
	}
}

// loadRow is one row of a load query. Its byte slices point into the
// connection's read buffer, valid until the next row.
type loadRow struct {
	snapshot      bool
	version       int64
	schemaVersion int32
	data          []byte
	eventType     []byte
	md            eventstore.Metadata
	takenAt       time.Time
}

// binaryColumns reports whether every column of a load query comes in
// binary format (pgx's default for these types), which loadRow.decode
// reads; text columns read the same in both.
func binaryColumns(fields []pgconn.FieldDescription) bool {
	if len(fields) != loadColCount {
		return false
	}
	for i, f := range fields {
		if i != colType && f.Format != pgx.BinaryFormatCode {
			return false
		}
	}
	return true
}

var errBadColumn = errors.New("malformed column")

// decode reads a row in binary format.
func (r *loadRow) decode(vals [][]byte) error {
	if len(vals) != loadColCount || len(vals[colVersion]) != 8 {
		return errBadColumn
	}
	r.version = int64(binary.BigEndian.Uint64(vals[colVersion]))
	r.data = vals[colData]
	r.eventType = vals[colType]
	if r.snapshot = r.eventType == nil; r.snapshot {
		if len(vals[colSchemaVersion]) != 4 || len(vals[colTakenAt]) != 8 {
			return errBadColumn
		}
		r.schemaVersion = int32(binary.BigEndian.Uint32(vals[colSchemaVersion]))
		r.takenAt = timeFromPG(int64(binary.BigEndian.Uint64(vals[colTakenAt])))
		return nil
	}
	r.md = nil
	if md := vals[colMetadata]; md != nil {
		m, err := decodeMetadata(md)
		if err != nil {
			return fmt.Errorf("metadata: %w", err)
		}
		r.md = m
	}
	return nil
}

// scan reads a row through pgx's scanning (when the server sent a column
// in another format than decode reads).
func (r *loadRow) scan(rows pgx.Rows) error {
	var (
		schemaVersion pgtype.Int4
		typ           pgtype.Text
		takenAt       pgtype.Timestamptz
		md, data      []byte
	)
	if err := rows.Scan(&r.version, &schemaVersion, &data, &typ, &md, &takenAt); err != nil {
		return err
	}
	r.data, r.schemaVersion, r.takenAt = data, schemaVersion.Int32, takenAt.Time.UTC()
	r.snapshot, r.eventType = !typ.Valid, []byte(typ.String)
	r.md = nil
	if md != nil {
		m, err := decodeMetadata(md)
		if err != nil {
			return fmt.Errorf("metadata: %w", err)
		}
		r.md = m
	}
	return nil
}

// pgEpochMicros is 2000-01-01 00:00:00 UTC, PostgreSQL's epoch, in
// microseconds since the Unix epoch.
const pgEpochMicros = 946_684_800_000_000

// timeFromPG converts a binary timestamptz (microseconds since 2000-01-01
// UTC) to a UTC time.
func timeFromPG(us int64) time.Time {
	return time.UnixMicro(us + pgEpochMicros).UTC()
}

// payloadBuffer copies payloads into shared chunks, so that a load
// allocates once per chunk rather than once per event. Each copy is a
// full slice expression: appending to one never writes into another.
type payloadBuffer struct {
	chunk []byte
	next  int // size of the next chunk
}

const (
	minPayloadChunk = 1 << 10
	maxPayloadChunk = 64 << 10
)

func (b *payloadBuffer) copy(p []byte) []byte {
	if len(p) > cap(b.chunk)-len(b.chunk) {
		if len(p) > maxPayloadChunk/4 {
			return append(make([]byte, 0, len(p)), p...)
		}
		b.next = min(max(b.next*2, minPayloadChunk), maxPayloadChunk)
		for b.next < len(p) {
			b.next *= 2
		}
		b.chunk = make([]byte, 0, b.next)
	}
	n := len(b.chunk)
	b.chunk = append(b.chunk, p...)
	return b.chunk[n:len(b.chunk):len(b.chunk)]
}
