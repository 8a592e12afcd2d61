package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/eskit/eskit/internal/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/eventstore/pgstore/pgtest"
)

func importBatch(streams, perStream int, tag string) []eventstore.StreamAppend {
	out := make([]eventstore.StreamAppend, streams)
	for i := range out {
		out[i] = eventstore.StreamAppend{StreamID: fmt.Sprintf("%s-%d", tag, i), Expected: eventstore.NoStream, Events: evs(perStream, tag)}
	}
	out[0].Expected = eventstore.Any
	return out
}

func TestImportThenAppend(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	before, err := s.Append(ctx, "pre", eventstore.NoStream, ev("E", "0"))
	require.NoError(t, err)

	batch := importBatch(20, 5, "imp")
	res, err := s.Import(ctx, batch)
	require.NoError(t, err)
	require.Len(t, res.Streams, 20)
	require.Equal(t, int64(5), res.Streams[3].Version)
	require.True(t, before.Position.Before(res.Position))

	for _, a := range batch {
		recs, err := eventstore.Collect(s.ReadStream(ctx, a.StreamID, 1))
		require.NoError(t, err)
		require.Len(t, recs, 5)
		for j, r := range recs {
			require.Equal(t, a.Events[j].ID, r.ID)
			require.Equal(t, a.Events[j].Metadata, r.Metadata)
			require.Equal(t, int64(j+1), r.Version)
		}
	}
	after, err := s.Append(ctx, "imp-3", eventstore.Exact(5), ev("E", "6"))
	require.NoError(t, err)
	require.Equal(t, int64(6), after.Version())

	all := waitFeedLen(t, s, 1+100+1)
	require.Equal(t, res.Position, all[100].Position)
	require.Equal(t, after.Position, all[101].Position)
	checkPerStreamOrder(t, all)
}

func checkPerStreamOrder(t *testing.T, recs []eventstore.Record) {
	t.Helper()
	last := map[string]int64{}
	for i, r := range recs {
		if i > 0 {
			require.True(t, recs[i-1].Position.Before(r.Position), "feed order at %d", i)
		}
		require.Equal(t, last[r.StreamID]+1, r.Version, "stream %s out of order on the feed", r.StreamID)
		last[r.StreamID] = r.Version
	}
}

func TestImportConflicts(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	existing, err := s.Append(ctx, "imp-2", eventstore.NoStream, ev("E", "0"))
	require.NoError(t, err)

	_, err = s.Import(ctx, importBatch(4, 3, "imp"))
	ce := checkConflict(t, err, "imp-2")
	require.Equal(t, int64(1), ce.Actual)
	_, err = s.StreamVersion(ctx, "imp-0")
	require.ErrorIs(t, err, eventstore.ErrStreamNotFound, "nothing of a failed import is written")

	// A stored event ID fails the import.
	batch := importBatch(2, 2, "dup")
	batch[1].Events[1] = eventstore.Event{ID: existingID(t, s, existing), Type: "E", Data: []byte("x")}
	_, err = s.Import(ctx, batch)
	var de *eventstore.DuplicateEventError
	require.ErrorAs(t, err, &de)
	require.Equal(t, batch[1].Events[1].ID, de.EventID)

	_, err = s.Import(ctx, []eventstore.StreamAppend{{StreamID: "n", Expected: eventstore.Exact(3), Events: evs(1, "x")}})
	require.ErrorIs(t, err, eventstore.ErrInvalidArgument)
	waitFeedLen(t, s, 1)
}

func existingID(t *testing.T, s *pgstore.Store, r eventstore.AppendResult) [16]byte {
	t.Helper()
	recs, err := eventstore.Collect(s.ReadStream(context.Background(), r.Streams[0].StreamID, 1))
	require.NoError(t, err)
	require.Equal(t, r.Position, recs[0].Position)
	return recs[0].ID
}

// TestImportRacingAppends: appends to the streams an import creates either
// win (and the import fails) or fail with a retryable conflict; the feed
// never interleaves them out of order.
func TestImportRacingAppends(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	for round := range 3 {
		tag := fmt.Sprintf("r%d", round)
		batch := importBatch(200, 5, tag)
		var wg sync.WaitGroup
		var importErr error
		appendErrs := make([]error, 4)
		wg.Go(func() { _, importErr = s.Import(ctx, batch) })
		for w := range appendErrs {
			wg.Go(func() {
				for i := 199; i >= 0; i -= 1 + w {
					_, err := s.Append(ctx, fmt.Sprintf("%s-%d", tag, i), eventstore.Any, ev("Racer", "1"))
					if err != nil && !eventstore.IsRetryable(err) {
						appendErrs[w] = err
						return
					}
				}
			})
		}
		wg.Wait()
		for _, err := range appendErrs {
			require.NoError(t, err)
		}
		if importErr != nil {
			require.True(t, eventstore.IsRetryable(importErr), "import error %v", importErr)
		}
	}
	lag := func() int64 { l, err := s.FeedLag(ctx); require.NoError(t, err); return l.Events }
	require.Eventually(t, func() bool { return lag() == 0 }, 10*time.Second, 5*time.Millisecond)
	checkPerStreamOrder(t, feed(t, s, eventstore.Position{}))
}

func TestCancelledContext(t *testing.T) {
	s := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.Append(ctx, "a", eventstore.Any, ev("E", "1"))
	require.ErrorIs(t, err, context.Canceled)
	_, err = s.ReadAll(ctx, eventstore.Position{}, 10)
	require.ErrorIs(t, err, context.Canceled)
	_, err = eventstore.Collect(s.ReadStream(ctx, "a", 1))
	require.ErrorIs(t, err, context.Canceled)
	_, err = s.Import(ctx, importBatch(1, 1, "c"))
	require.ErrorIs(t, err, context.Canceled)
	for _, err := range s.Subscribe(ctx, eventstore.Position{}) {
		require.NoError(t, err, "a subscription ends silently with its context")
	}

	// Cancelled while waiting for a stream lock held by another transaction.
	bg := context.Background()
	holder, err := s.Pool().Begin(bg)
	require.NoError(t, err)
	defer func() { _ = holder.Rollback(bg) }()
	_, err = s.AppendTx(bg, holder, eventstore.StreamAppend{StreamID: "locked", Expected: eventstore.Any, Events: []eventstore.Event{ev("E", "1")}})
	require.NoError(t, err)
	ctx, cancel = context.WithCancel(bg)
	done := make(chan error, 1)
	go func() {
		_, err := s.AppendMulti(ctx,
			eventstore.StreamAppend{StreamID: "free", Expected: eventstore.Any, Events: []eventstore.Event{ev("E", "1")}},
			eventstore.StreamAppend{StreamID: "locked", Expected: eventstore.Any, Events: []eventstore.Event{ev("E", "2")}})
		done <- err
	}()
	pid := waitForLockWaiter(t, s)
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	// The client returns as soon as it has asked the server to cancel; the
	// lock is released only once the server has acted on the request, or the
	// append could still go on (a cancelled call's outcome is unknown until
	// then, as with any lost reply).
	require.Eventually(t, func() bool {
		var waiting bool
		err := holder.QueryRow(bg, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE pid = $1 AND wait_event_type = 'Lock')`, pid).Scan(&waiting)
		return err == nil && !waiting
	}, 10*time.Second, 2*time.Millisecond)
	require.NoError(t, holder.Rollback(bg))
	_, err = s.StreamVersion(bg, "free")
	require.ErrorIs(t, err, eventstore.ErrStreamNotFound)
	_, err = s.StreamVersion(bg, "locked")
	require.ErrorIs(t, err, eventstore.ErrStreamNotFound)
}

// waitForLockWaiter waits until a backend of the test database waits for a
// lock, and returns its process ID.
func waitForLockWaiter(t *testing.T, s *pgstore.Store) int32 {
	t.Helper()
	var pid int32
	require.Eventually(t, func() bool {
		err := s.Pool().QueryRow(context.Background(), `SELECT pid FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid() LIMIT 1`).Scan(&pid)
		return err == nil
	}, 10*time.Second, 2*time.Millisecond)
	return pid
}

// TestBackendTerminatedMidAppend: the append's backend dies after writing
// some of its rows (it waits on a unique key held by another transaction);
// the caller gets the server's error, nothing is written, and the store
// keeps working.
func TestBackendTerminatedMidAppend(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	shared := eventstore.NewEventID()

	// The holder writes, uncommitted, an event with an ID our append reuses
	// at its end: our insert writes stream "x" and then waits for it.
	holder, err := s.Pool().Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = holder.Rollback(ctx) }()
	_, err = s.AppendTx(ctx, holder, eventstore.StreamAppend{StreamID: "h", Expected: eventstore.Any,
		Events: []eventstore.Event{{ID: shared, Type: "E", Data: []byte("h")}}})
	require.NoError(t, err)

	done := make(chan error, 1)
	go func() {
		batch := append(evs(50, "x"), eventstore.Event{ID: shared, Type: "E", Data: []byte("x")})
		_, err := s.Append(ctx, "x", eventstore.NoStream, batch...)
		done <- err
	}()
	pid := waitForLockWaiter(t, s)
	var ok bool
	require.NoError(t, s.Pool().QueryRow(ctx, "SELECT pg_terminate_backend($1)", pid).Scan(&ok))
	require.True(t, ok)

	err = <-done
	require.Error(t, err)
	require.False(t, eventstore.IsRetryable(err), "a lost connection is not a version conflict: %v", err)
	require.Contains(t, err.Error(), "pgstore: append")
	require.Contains(t, err.Error(), "terminat")
	require.NoError(t, holder.Rollback(ctx))

	_, err = s.StreamVersion(ctx, "x")
	require.ErrorIs(t, err, eventstore.ErrStreamNotFound, "nothing partially written")
	res, err := s.Append(ctx, "x", eventstore.NoStream, ev("E", "after"))
	require.NoError(t, err)
	require.Equal(t, int64(1), res.Version())
}

// TestSubscribeAcrossStores: a Store on another pool (another process, as
// far as PostgreSQL is concerned) wakes up on this one's commits, with and
// without notifications.
func TestSubscribeAcrossStores(t *testing.T) {
	for _, notify := range []bool{true, false} {
		t.Run(fmt.Sprintf("notify=%v", notify), func(t *testing.T) {
			url := pgtest.Database(t)
			writer := newStoreOn(t, pgtest.PoolFor(t, url), pgstore.WithNotify(notify))
			reader := newStoreOn(t, pgtest.PoolFor(t, url), pgstore.WithNotify(notify),
				pgstore.WithPollInterval(time.Millisecond, 20*time.Millisecond))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()

			got := make(chan eventstore.Record, 100)
			go func() {
				for r, err := range reader.Subscribe(ctx, eventstore.Position{}) {
					if err != nil {
						return
					}
					got <- r
				}
			}()
			for i := range 20 {
				res, err := writer.Append(ctx, "s", eventstore.Exact(int64(i)), ev("E", fmt.Sprint(i)))
				require.NoError(t, err)
				select {
				case r := <-got:
					require.Equal(t, res.Position, r.Position)
					require.Equal(t, int64(i+1), r.Version)
				case <-time.After(10 * time.Second):
					t.Fatalf("event %d not delivered", i)
				}
			}
		})
	}
}

func TestClosedStore(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	sub := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		var last error
		close(started)
		for _, err := range s.Subscribe(ctx, eventstore.Position{}) {
			last = err
		}
		sub <- last
	}()
	<-started
	s.Close()
	require.ErrorIs(t, <-sub, eventstore.ErrClosed)
	_, err := s.Append(ctx, "a", eventstore.Any, ev("E", "1"))
	require.ErrorIs(t, err, eventstore.ErrClosed)
	_, err = s.ReadAll(ctx, eventstore.Position{}, 1)
	require.ErrorIs(t, err, eventstore.ErrClosed)
	err = s.InTx(ctx, func(pgx.Tx) error { return errors.New("not called") })
	require.ErrorIs(t, err, eventstore.ErrClosed)
}

// TestSingleStreamAppendTakesTheStreamLock: a single-stream append (the
// pipelined path) waits for the stream lock that append_events took in
// another transaction, then reads the version that transaction committed.
func TestSingleStreamAppendTakesTheStreamLock(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	holder, err := s.Pool().Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = holder.Rollback(ctx) }()
	_, err = s.AppendTx(ctx, holder, eventstore.StreamAppend{StreamID: "shared", Expected: eventstore.NoStream,
		Events: []eventstore.Event{ev("E", "1")}})
	require.NoError(t, err)

	type outcome struct {
		res eventstore.AppendResult
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := s.Append(ctx, "shared", eventstore.Exact(1), ev("E", "2"))
		done <- outcome{res, err}
	}()
	waitForLockWaiter(t, s)
	require.NoError(t, holder.Commit(ctx))
	out := <-done
	require.NoError(t, out.err)
	require.Equal(t, int64(2), out.res.Streams[0].Version)
	checkPerStreamOrder(t, feed(t, s, eventstore.Position{}))
}
