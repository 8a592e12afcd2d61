package pgstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/eskit/eskit/eventstore"
)

// maxSingleAttempts bounds how often appendSingle retries an append whose
// version check failed but whose expectation holds when it looks again.
const maxSingleAttempts = 3

// appendSingle appends to one stream in one round trip.
//
// An append to a new stream (NoStream), or after an exact version n that
// the store knows the stream has (an earlier append or read of this store
// saw it: see knownVersions), is one statement: an INSERT of versions
// n+1.. that takes the stream's advisory lock before it computes its first
// row (see streamLock). It reads no row, so neither its plan nor its
// snapshot (taken before the lock) matters: the unique (stream, version)
// key is its version check, and its transaction gets its ID after the
// lock, as in the other appends. An append after another exact version
// n > 0 is one statement too once the events table is large
// (Store.checkTableSize): the same INSERT, which also probes the stream's
// event at version n (so that it never leaves a gap). Its snapshot
// predates the lock, but an event the caller knows of (how else would it
// expect n?) was committed before the statement started; a probe that
// misses an event committed in between is a failed check that
// resolveSingle finds to hold, and the append is retried.
//
// Any other append (and, while the events table is small, one after an
// exact version) sends two pipelined statements that PostgreSQL runs as
// one implicit transaction (everything up to the protocol's Sync message):
//
//  1. the stream's advisory lock, with the same key as append_events, and
//     enable_seqscan off until the end of this transaction (the statement
//     below is planned while it is off, so a plan the session caches while
//     the table is small stays an index probe as the table grows);
//  2. one INSERT ... SELECT whose WHERE clause is the version check: for
//     Exact(n) a probe of the stream's event at version n (the INSERT of
//     version n+1 does the rest), for Any and StreamExists a read of the
//     stream's last version. Its snapshot is taken after the lock is
//     granted, so it sees the previous writer's events; when the check
//     fails it writes nothing and takes no sequence value and no
//     transaction ID. The transaction has no ID before this statement, so
//     AppendTx's check of the caller's transaction ID cannot fail here.
//
// Stored event IDs are caught by the unique index on the event ID: the
// INSERT fails, the implicit transaction rolls back, and resolveSingle
// tells an idempotent repeat from a clash. resolveSingle also explains an
// INSERT that wrote nothing or met the (stream, version) key (a version
// conflict, or a repeat whose stream has moved on since).
func (s *Store) appendSingle(ctx context.Context, a eventstore.StreamAppend) (eventstore.AppendResult, error) {
	if err := s.checkOpen(); err != nil {
		return eventstore.AppendResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return eventstore.AppendResult{}, err
	}
	appends, err := s.limits.PrepareAppends([]eventstore.StreamAppend{a})
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	a = appends[0]
	for attempt := 1; ; attempt++ {
		// A fresh batch each time: pgx records in a sent batch the statement
		// descriptions of the connection it went out on.
		b, err := s.singleBatch(a)
		if err != nil {
			return eventstore.AppendResult{}, err
		}
		res, done, err := s.trySingle(ctx, b, a)
		if done {
			return res, err
		}
		res, retry, err := s.resolveSingle(ctx, a, nil)
		if !retry {
			return res, err
		}
		if attempt == maxSingleAttempts {
			return eventstore.AppendResult{}, &eventstore.ConcurrencyError{Stream: a.StreamID, Expected: a.Expected, Actual: -1,
				Reason: "the stream kept changing between the version check and its explanation"}
		}
	}
}

// singleBatch builds appendSingle's statements.
func (s *Store) singleBatch(a eventstore.StreamAppend) (*pgx.Batch, error) {
	b := &pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 0, 2)}
	one, many := s.q.insertOne, s.q.insertMany
	switch {
	case a.Expected == eventstore.NoStream || (a.Expected > 0 && s.known.has(a.StreamID, int64(a.Expected))):
		one, many = s.q.insertAtOne, s.q.insertAtMany
	case a.Expected > 0 && s.large.Load():
		one, many = s.q.insertAfterLockedOne, s.q.insertAfterLockedMany
	case a.Expected > 0:
		one, many = s.q.insertAfterOne, s.q.insertAfterMany
		b.Queue(s.q.lockStream, s.schema+"/"+a.StreamID)
	default:
		b.Queue(s.q.lockStream, s.schema+"/"+a.StreamID)
	}
	if len(a.Events) == 1 {
		e := a.Events[0]
		md, err := encodeMetadata(e.Metadata)
		if err != nil {
			return nil, &eventstore.InvalidArgumentError{Field: "events[0].Metadata", Reason: err.Error()}
		}
		// A [16]byte goes out as binary uuid; a uuid.UUID would go through
		// its driver.Valuer, as text.
		b.Queue(one, a.StreamID, int64(a.Expected), [16]byte(e.ID), e.Type, e.Data, md)
		return b, nil
	}
	n := len(a.Events)
	ids, types, data, mds := make([][16]byte, n), make([]string, n), make([][]byte, n), make([][]byte, n)
	for j, e := range a.Events {
		md, err := encodeMetadata(e.Metadata)
		if err != nil {
			return nil, &eventstore.InvalidArgumentError{Field: fmt.Sprintf("events[%d].Metadata", j), Reason: err.Error()}
		}
		ids[j], types[j], data[j], mds[j] = [16]byte(e.ID), e.Type, e.Data, md
	}
	b.Queue(many, a.StreamID, int64(a.Expected), ids, types, data, mds)
	return b, nil
}

// trySingle sends the batch. done is false when the version check failed
// and nothing was written. A stored event ID may be an idempotent repeat:
// resolveSingle finds out.
func (s *Store) trySingle(ctx context.Context, b *pgx.Batch, a eventstore.StreamAppend) (res eventstore.AppendResult, done bool, err error) {
	var version, tx, seq, n int64
	scan := func(rows pgx.Rows, err error) error {
		if err != nil {
			return err
		}
		var v, t, q int64
		_, err = pgx.ForEachRow(rows, []any{&v, &t, &q}, func() error {
			n++
			version, tx, seq = max(version, v), t, max(seq, q)
			return nil
		})
		return err
	}
	if b.Len() == 1 {
		// One statement needs no pipeline: a plain query costs less on
		// the client. Reading its rows to the end reads the end of the
		// implicit transaction too, so a failed commit surfaces here.
		q := b.QueuedQueries[0]
		err = scan(s.pool.Query(ctx, q.SQL, q.Arguments...))
	} else {
		br := s.pool.SendBatch(ctx, b)
		if _, err = br.Exec(); err == nil { // the lock
			err = scan(br.Query())
		}
		// Close reads the end of the implicit transaction: a failed
		// commit surfaces here.
		if cerr := br.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UniqueViolation && pgErr.ConstraintName == constraintEventID {
			res, _, err := s.resolveSingle(ctx, a, err)
			return res, true, err
		}
		if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UniqueViolation && pgErr.ConstraintName == constraintStreamVersion {
			// Another writer took the versions: the version check
			// failed, which resolveSingle explains.
			return eventstore.AppendResult{}, false, nil
		}
		return eventstore.AppendResult{}, true, s.appendError(err, []eventstore.StreamAppend{a})
	}
	if n == 0 {
		return eventstore.AppendResult{}, false, nil
	}
	return eventstore.AppendResult{
		Streams:  []eventstore.StreamResult{{StreamID: a.StreamID, Version: version}},
		Position: eventstore.Position{Tx: uint64(tx), Seq: uint64(seq)},
	}, true, nil
}

// resolveSingle explains a single-stream append that wrote nothing, with
// two pipelined reads: the stored copies of its event IDs and the stream's
// version. Stored IDs make it a duplicate (an idempotent repeat or a
// clash, as duplicateResult decides). Otherwise it is a version conflict,
// unless the expectation holds now (the stream was changed and the change
// is visible only now): then retry is true. cause, when set, is the unique
// violation that brought it here, returned when no stored ID is found.
func (s *Store) resolveSingle(ctx context.Context, a eventstore.StreamAppend, cause error) (res eventstore.AppendResult, retry bool, err error) {
	ids := make([]uuid.UUID, len(a.Events))
	for j, e := range a.Events {
		ids[j] = e.ID
	}
	b := &pgx.Batch{}
	b.Queue(s.q.storedCopies, ids)
	b.Queue(s.q.streamVersion, a.StreamID)
	br := s.pool.SendBatch(ctx, b)
	defer br.Close()
	rows, err := br.Query()
	var stored []appendRow
	if err == nil {
		var r appendRow
		_, err = pgx.ForEachRow(rows, []any{&r.stream, &r.id, &r.version, &r.tx, &r.seq}, func() error {
			r.kind = kindDuplicate
			stored = append(stored, r)
			return nil
		})
	}
	var version int64
	if err == nil {
		err = br.QueryRow().Scan(&version)
		if errors.Is(err, pgx.ErrNoRows) {
			version, err = 0, nil
		}
	}
	if err != nil {
		return eventstore.AppendResult{}, false, fmt.Errorf("pgstore: append: %w", err)
	}
	appends := []eventstore.StreamAppend{a}
	switch {
	case len(stored) > 0:
		res, err := duplicateResult(appends, stored)
		return res, false, err
	case cause != nil:
		return eventstore.AppendResult{}, false, s.appendError(cause, appends)
	case a.Expected.Check(version):
		return eventstore.AppendResult{}, true, nil
	}
	return eventstore.AppendResult{}, false, &eventstore.ConcurrencyError{Stream: a.StreamID, Expected: a.Expected, Actual: version}
}
