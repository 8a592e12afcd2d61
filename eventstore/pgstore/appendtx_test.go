package pgstore_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/eskit/eskit/internal/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore/pgtest"
)

// AppendTx's promise holds for every error: a conflict raised by the
// (stream, version) unique key — here a REPEATABLE READ snapshot that does
// not see an event committed after it began — leaves the caller's
// transaction usable, and what the caller wrote before it commits.
func TestAppendTxUniqueKeyConflictLeavesTransactionUsable(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t)
	s := newStoreOn(t, pool)
	_, err := pool.Exec(ctx, `CREATE TABLE business (note text)`)
	require.NoError(t, err)

	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, `INSERT INTO business VALUES ('before')`) // the snapshot is taken
	require.NoError(t, err)

	// Another writer appends to the stream after the snapshot.
	_, err = s.Append(ctx, "rr-1", eventstore.NoStream, evs(1, "other")...)
	require.NoError(t, err)

	_, err = s.AppendTx(ctx, tx, eventstore.StreamAppend{StreamID: "rr-1", Expected: eventstore.Any, Events: evs(1, "mine")})
	require.ErrorIs(t, err, eventstore.ErrConcurrency, "got %v", err)
	require.True(t, eventstore.IsRetryable(err))

	// The transaction goes on, and commits what the caller wrote.
	_, err = tx.Exec(ctx, `INSERT INTO business VALUES ('after')`)
	require.NoError(t, err, "the caller's transaction must stay usable")
	require.NoError(t, tx.Commit(ctx))
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM business`).Scan(&n))
	require.Equal(t, 2, n)
	v, err := s.StreamVersion(ctx, "rr-1")
	require.NoError(t, err)
	require.Equal(t, int64(1), v, "the refused append wrote nothing")
}

// AppendTxRecords returns the records of the append as the feed shows
// them once the transaction commits (IDs the store gave events without
// one, versions, positions, recording times, metadata), and none for a
// repeated append.
func TestAppendTxRecords(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t)
	s := newStoreOn(t, pool)
	_, err := s.Append(ctx, "recs-1", eventstore.NoStream, evs(2, "before")...)
	require.NoError(t, err)
	appends := []eventstore.StreamAppend{
		{StreamID: "recs-1", Expected: eventstore.Exact(2), Events: evs(2, "a")},
		{StreamID: "recs-2", Expected: eventstore.NoStream, Events: evs(1, "b")},
	}
	appends[1].Events[0].ID = uuid.Nil // the store gives it one
	var got []eventstore.Record
	require.NoError(t, s.InTx(ctx, func(tx pgx.Tx) error {
		var err error
		got, _, err = s.AppendTxRecords(ctx, tx, appends...)
		return err
	}))
	require.Len(t, got, 3)
	all := waitFeedLen(t, s, 5)
	require.Equal(t, all[2:], got)
	require.Equal(t, []int64{3, 4, 1}, []int64{got[0].Version, got[1].Version, got[2].Version})

	// The same append again: a duplicate, no records.
	appends[1].Events[0].ID = got[2].ID
	require.NoError(t, s.InTx(ctx, func(tx pgx.Tx) error {
		recs, res, err := s.AppendTxRecords(ctx, tx, appends...)
		require.True(t, err != nil || (res.Duplicate && len(recs) == 0), "a repeated append: %v %v %v", recs, res, err)
		return nil
	}))
}
