package pgstore_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/internal/require"
)

// Single-stream appends keep their version checks on every path: a new
// stream, an exact version the store knows the stream has (no probe), one
// it does not know (probed), on small and large tables.
func TestSingleStreamVersionChecks(t *testing.T) {
	eachTableSize(t, func(t *testing.T, s *pgstore.Store) {
		ctx := context.Background()
		other := newStoreOn(t, s.Pool()) // knows nothing of what s writes
		pgstore.SetLargeTable(other, pgstore.LargeTable(s))

		_, err := s.Append(ctx, "acc-1", eventstore.NoStream, evs(3, "a")...)
		require.NoError(t, err)
		// NoStream on a stream that exists.
		ce := checkConflict(t, appendErr(s.Append(ctx, "acc-1", eventstore.NoStream, evs(1, "b")...)), "acc-1")
		require.EqualValues(t, 3, ce.Actual)
		// Known versions: the head appends, an older one conflicts, and
		// so does one ahead of the stream (never known).
		for _, st := range []*pgstore.Store{s, other} {
			v, err := st.StreamVersion(ctx, "acc-1")
			require.NoError(t, err)
			ce = checkConflict(t, appendErr(st.Append(ctx, "acc-1", eventstore.Exact(v-1), evs(2, "old")...)), "acc-1")
			require.Equal(t, v, ce.Actual)
			ce = checkConflict(t, appendErr(st.Append(ctx, "acc-1", eventstore.Exact(v+1), evs(1, "ahead")...)), "acc-1")
			require.Equal(t, v, ce.Actual)
			res, err := st.Append(ctx, "acc-1", eventstore.Exact(v), evs(2, "head")...)
			require.NoError(t, err)
			require.Equal(t, v+2, res.Version())
		}
		// Versions a store has not seen: probed.
		fresh := newStoreOn(t, s.Pool())
		pgstore.SetLargeTable(fresh, pgstore.LargeTable(s))
		ce = checkConflict(t, appendErr(fresh.Append(ctx, "acc-1", eventstore.Exact(5), evs(1, "stale")...)), "acc-1")
		require.EqualValues(t, 7, ce.Actual)
		res, err := newStoreOn(t, s.Pool()).Append(ctx, "acc-1", eventstore.Exact(7), evs(1, "probed")...)
		require.NoError(t, err)
		require.EqualValues(t, 8, res.Version())
		recs, err := eventstore.Collect(s.ReadStream(ctx, "acc-1", 1))
		require.NoError(t, err)
		for i, r := range recs {
			require.EqualValues(t, i+1, r.Version, "no gap")
		}
		require.Len(t, recs, 8)
	})
}

func appendErr(_ eventstore.AppendResult, err error) error { return err }

// A version appended in a transaction that rolls back is not taken as
// known: the next append expecting it is refused rather than leave a gap.
func TestRolledBackVersionIsNotKnown(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	_, err := s.Append(ctx, "acc-1", eventstore.NoStream, evs(2, "a")...)
	require.NoError(t, err)
	tx, err := s.Pool().Begin(ctx)
	require.NoError(t, err)
	res, err := s.AppendTx(ctx, tx, eventstore.StreamAppend{StreamID: "acc-1", Expected: eventstore.Exact(2), Events: evs(3, "tx")})
	require.NoError(t, err)
	require.EqualValues(t, 5, res.Version())
	require.NoError(t, tx.Rollback(ctx))
	ce := checkConflict(t, appendErr(s.Append(ctx, "acc-1", eventstore.Exact(5), evs(1, "gap")...)), "acc-1")
	require.EqualValues(t, 2, ce.Actual)
	var n int
	require.NoError(t, s.Pool().QueryRow(ctx, "SELECT count(*) FROM eskit.events WHERE stream_id = 'acc-1'").Scan(&n))
	require.Equal(t, 2, n)
}

// Concurrent writers of one stream, each appending after the version it
// last saw, never leave a gap or a duplicate version; the feed has the
// stream's events in version order.
func TestConcurrentExactAppends(t *testing.T) {
	eachTableSize(t, func(t *testing.T, s *pgstore.Store) {
		ctx := context.Background()
		_, err := s.Append(ctx, "hot", eventstore.NoStream, evs(1, "first")...)
		require.NoError(t, err)
		const writers, each = 8, 15
		var wg sync.WaitGroup
		errs := make([]error, writers)
		for w := range writers {
			st := s
			if w%2 == 1 {
				st = newStoreOn(t, s.Pool())
				pgstore.SetLargeTable(st, pgstore.LargeTable(s))
			}
			wg.Go(func() {
				for i := 0; i < each; {
					v, err := st.StreamVersion(ctx, "hot")
					if err != nil {
						errs[w] = err
						return
					}
					_, err = st.Append(ctx, "hot", eventstore.Exact(v), evs(1+i%2, fmt.Sprintf("w%d-%d", w, i))...)
					switch {
					case err == nil:
						i++
					case eventstore.IsRetryable(err):
					default:
						errs[w] = err
						return
					}
				}
			})
		}
		wg.Wait()
		for _, err := range errs {
			require.NoError(t, err)
		}
		recs, err := eventstore.Collect(s.ReadStream(ctx, "hot", 1))
		require.NoError(t, err)
		for i, r := range recs {
			require.EqualValues(t, i+1, r.Version)
		}
		var last eventstore.Position
		for _, r := range feed(t, s, eventstore.Position{}) {
			if r.StreamID == "hot" {
				require.True(t, r.Position.After(last), "feed order follows versions")
				last = r.Position
			}
		}
	})
}

// The single-statement appends wait for the stream lock that another
// transaction holds, then see what it committed: a conflict for a new
// stream and for a version it moved past, success (after a retry of the
// probe, whose snapshot predates the lock) for its new version; the feed
// keeps the stream's order.
func TestSingleStatementAppendsTakeTheStreamLock(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	pgstore.SetLargeTable(s, true)
	_, err := s.Append(ctx, "known", eventstore.NoStream, ev("E", "1")) // version 1 known
	require.NoError(t, err)
	_, err = s.Append(ctx, "probed", eventstore.NoStream, ev("E", "1"))
	require.NoError(t, err)
	for _, tc := range []struct {
		stream   string
		holder   eventstore.ExpectedVersion // the lock holder's append
		expected eventstore.ExpectedVersion // the waiting append's
		conflict bool
	}{
		{"new", eventstore.NoStream, eventstore.NoStream, true},
		{"known", eventstore.Exact(1), eventstore.Exact(1), true},
		{"probed", eventstore.Exact(1), eventstore.Exact(2), false},
	} {
		t.Run(tc.stream, func(t *testing.T) {
			holder, err := s.Pool().Begin(ctx)
			require.NoError(t, err)
			defer func() { _ = holder.Rollback(ctx) }()
			_, err = s.AppendTx(ctx, holder, eventstore.StreamAppend{StreamID: tc.stream, Expected: tc.holder, Events: []eventstore.Event{ev("E", "h")}})
			require.NoError(t, err)
			type outcome struct {
				res eventstore.AppendResult
				err error
			}
			done := make(chan outcome, 1)
			go func() {
				res, err := s.Append(ctx, tc.stream, tc.expected, ev("E", "w"))
				done <- outcome{res, err}
			}()
			waitForLockWaiter(t, s)
			require.NoError(t, holder.Commit(ctx))
			out := <-done
			if tc.conflict {
				checkConflict(t, out.err, tc.stream)
				return
			}
			require.NoError(t, out.err)
			require.EqualValues(t, int64(tc.expected)+1, out.res.Version())
		})
	}
	checkPerStreamOrder(t, feed(t, s, eventstore.Position{}))
}
