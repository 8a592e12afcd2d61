package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/eskit/eskit/internal/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/eventstore/pgstore/pgtest"
	"github.com/eskit/eskit/snapshot"
)

// eachTableSize runs fn on a store that treats its events table as small
// (loads turn sequential scans off in a pipelined statement) and on one
// that treats it as large.
func eachTableSize(t *testing.T, fn func(t *testing.T, s *pgstore.Store)) {
	for _, large := range []bool{false, true} {
		name := "small"
		if large {
			name = "large"
		}
		t.Run(name, func(t *testing.T) {
			s := newStore(t)
			pgstore.SetLargeTable(s, large)
			fn(t, s)
		})
	}
}

// loadAll ranges over a LoadWithSnapshot and returns the records, the
// snapshots handed to Use and the error it ended with.
func loadAll(t *testing.T, s *pgstore.Store, snaps snapshot.Store, stream string, opts snapshot.LoadOptions) ([]eventstore.Record, []snapshot.Snapshot, error) {
	t.Helper()
	var seen []snapshot.Snapshot
	use := opts.Use
	opts.Use = func(snap snapshot.Snapshot) bool {
		seen = append(seen, snap)
		if use == nil {
			return true
		}
		return use(snap)
	}
	seq, err := s.LoadWithSnapshot(context.Background(), snaps, stream, opts)
	require.NoError(t, err)
	var recs []eventstore.Record
	for rec, err := range seq {
		if err != nil {
			return recs, seen, err
		}
		recs = append(recs, rec)
	}
	return recs, seen, nil
}

func versions(recs []eventstore.Record) []int64 {
	out := make([]int64, len(recs))
	for i, r := range recs {
		out[i] = r.Version
	}
	return out
}

func span(from, to int64) []int64 {
	out := []int64{}
	for v := from; v <= to; v++ {
		out = append(out, v)
	}
	return out
}

func saveSnapshot(t *testing.T, snaps snapshot.Store, stream string, version int64, schema int, state string) {
	t.Helper()
	require.NoError(t, snaps.Save(context.Background(), snapshot.Snapshot{StreamID: stream, Version: version, SchemaVersion: schema, State: []byte(state)}))
}

// LoadWithSnapshot reads the events after the stream's usable snapshot in
// one query, and the events from the first one otherwise.
func TestLoadWithSnapshot(t *testing.T) {
	eachTableSize(t, func(t *testing.T, s *pgstore.Store) {
		ctx := context.Background()
		snaps := s.Snapshots()
		events := evs(30, "load")
		for i := range events {
			// More types than the loader keeps names of, in runs.
			events[i].Type = fmt.Sprintf("T%d", i/2%10)
		}
		events[3].Metadata = eventstore.Metadata{"quote": `say "hi"`, "unicode": "é€", "empty": ""}
		events[4].Metadata = nil
		_, err := s.Append(ctx, "acc-1", eventstore.NoStream, events...)
		require.NoError(t, err)
		const head = 30

		// No snapshot: every event, as ReadStream has them (but for the
		// fields a load does not read), and Use is not called.
		recs, seen, err := loadAll(t, s, snaps, "acc-1", snapshot.LoadOptions{SchemaVersion: 1})
		require.NoError(t, err)
		require.Empty(t, seen)
		stored, err := eventstore.Collect(s.ReadStream(ctx, "acc-1", 1))
		require.NoError(t, err)
		require.Len(t, recs, len(stored))
		for i, r := range recs {
			w := stored[i]
			require.Equal(t, w.StreamID, r.StreamID)
			require.Equal(t, w.Version, r.Version)
			require.Equal(t, w.Type, r.Type)
			require.Equal(t, string(w.Data), string(r.Data))
			require.Equal(t, w.Metadata, r.Metadata)
			require.Equal(t, len(r.Data), cap(r.Data), "a record's payload does not share capacity with the next one")
		}

		// A snapshot of the schema version asked for skips the events
		// up to it.
		saveSnapshot(t, snaps, "acc-1", 4, 1, `{"n":4}`)
		recs, seen, err = loadAll(t, s, snaps, "acc-1", snapshot.LoadOptions{SchemaVersion: 1})
		require.NoError(t, err)
		require.Equal(t, span(5, head), versions(recs))
		require.Len(t, seen, 1)
		require.Equal(t, "acc-1", seen[0].StreamID)
		require.EqualValues(t, 4, seen[0].Version)
		require.Equal(t, 1, seen[0].SchemaVersion)
		require.Equal(t, `{"n":4}`, string(seen[0].State))
		require.False(t, seen[0].TakenAt.IsZero())
		require.Less(t, time.Since(seen[0].TakenAt), time.Hour)

		// Use refusing it (a state that does not decode): every event.
		recs, seen, err = loadAll(t, s, snaps, "acc-1", snapshot.LoadOptions{SchemaVersion: 1, Use: func(snapshot.Snapshot) bool { return false }})
		require.NoError(t, err)
		require.Equal(t, span(1, head), versions(recs))
		require.Len(t, seen, 1)

		// Another schema version: handed to Use, never skips events.
		recs, seen, err = loadAll(t, s, snaps, "acc-1", snapshot.LoadOptions{SchemaVersion: 2})
		require.NoError(t, err)
		require.Equal(t, span(1, head), versions(recs))
		require.Len(t, seen, 1)
		require.Equal(t, 1, seen[0].SchemaVersion)

		// A bound: a snapshot above it is not used (nor seen), events stop
		// at it.
		recs, seen, err = loadAll(t, s, snaps, "acc-1", snapshot.LoadOptions{SchemaVersion: 1, MaxVersion: 3})
		require.NoError(t, err)
		require.Equal(t, span(1, 3), versions(recs))
		require.Empty(t, seen)
		recs, seen, err = loadAll(t, s, snaps, "acc-1", snapshot.LoadOptions{SchemaVersion: 1, MaxVersion: 6})
		require.NoError(t, err)
		require.Equal(t, span(5, 6), versions(recs))
		require.Len(t, seen, 1)

		// Without a snapshot store: the events only.
		recs, seen, err = loadAll(t, s, nil, "acc-1", snapshot.LoadOptions{SchemaVersion: 1})
		require.NoError(t, err)
		require.Equal(t, span(1, head), versions(recs))
		require.Empty(t, seen)

		// A snapshot at the stream's version: nothing to replay, no
		// error.
		saveSnapshot(t, snaps, "acc-1", head, 1, `{"n":30}`)
		recs, seen, err = loadAll(t, s, snaps, "acc-1", snapshot.LoadOptions{SchemaVersion: 1})
		require.NoError(t, err)
		require.Empty(t, recs)
		require.Len(t, seen, 1)
	})
}

// A stream without events yields a StreamNotFoundError, after Use when it
// has a snapshot.
func TestLoadWithSnapshotMissingStream(t *testing.T) {
	eachTableSize(t, func(t *testing.T, s *pgstore.Store) {
		snaps := s.Snapshots()
		_, seen, err := loadAll(t, s, snaps, "nobody", snapshot.LoadOptions{SchemaVersion: 1})
		require.ErrorIs(t, err, eventstore.ErrStreamNotFound)
		require.Empty(t, seen)
		_, _, err = loadAll(t, s, nil, "nobody", snapshot.LoadOptions{SchemaVersion: 1})
		require.ErrorIs(t, err, eventstore.ErrStreamNotFound)

		saveSnapshot(t, snaps, "ghost", 3, 1, `{}`)
		recs, seen, err := loadAll(t, s, snaps, "ghost", snapshot.LoadOptions{SchemaVersion: 1})
		require.ErrorIs(t, err, eventstore.ErrStreamNotFound)
		require.Empty(t, recs)
		require.Len(t, seen, 1)
		_, seen, err = loadAll(t, s, snaps, "ghost", snapshot.LoadOptions{SchemaVersion: 1, Use: func(snapshot.Snapshot) bool { return false }})
		require.ErrorIs(t, err, eventstore.ErrStreamNotFound)
		require.Len(t, seen, 1)
	})
}

// Only the store's own snapshot store (or none) loads in one query; any
// other is errors.ErrUnsupported, before anything is read.
func TestLoadWithSnapshotOtherSnapshotStores(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t)
	s := newStoreOn(t, pool)
	require.NoError(t, pgstore.Migrate(ctx, pool, "other"))
	for name, snaps := range map[string]snapshot.Store{
		"memory":       snapshot.NewMemory(),
		"other schema": pgstore.NewSnapshots(pool, "other"),
		"other pool":   pgstore.NewSnapshots(pgtest.PoolFor(t, pgtest.Database(t)), pgstore.DefaultSchema),
	} {
		_, err := s.LoadWithSnapshot(ctx, snaps, "acc-1", snapshot.LoadOptions{})
		require.ErrorIs(t, err, errors.ErrUnsupported, name)
	}
	for name, snaps := range map[string]snapshot.Store{
		"Store.Snapshots": s.Snapshots(),
		"NewSnapshots":    pgstore.NewSnapshots(pool, pgstore.DefaultSchema),
		"nil":             nil,
	} {
		_, err := s.LoadWithSnapshot(ctx, snaps, "acc-1", snapshot.LoadOptions{})
		require.NoError(t, err, name)
	}
}

// Stopping early gives the connection back; bad input and a closed store
// are errors.
func TestLoadWithSnapshotStopsAndFails(t *testing.T) {
	eachTableSize(t, func(t *testing.T, s *pgstore.Store) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := s.Append(ctx, "acc-1", eventstore.NoStream, evs(50, "stop")...)
		require.NoError(t, err)
		for range 3 * int(s.Pool().Config().MaxConns) {
			seq, err := s.LoadWithSnapshot(ctx, s.Snapshots(), "acc-1", snapshot.LoadOptions{})
			require.NoError(t, err)
			for _, err := range seq {
				require.NoError(t, err)
				break
			}
		}
		v, err := s.StreamVersion(ctx, "acc-1")
		require.NoError(t, err)
		require.EqualValues(t, 50, v)

		_, _, err = loadAll(t, s, s.Snapshots(), "", snapshot.LoadOptions{})
		require.ErrorIs(t, err, eventstore.ErrInvalidArgument)
		s.Close()
		_, _, err = loadAll(t, s, s.Snapshots(), "acc-1", snapshot.LoadOptions{})
		require.ErrorIs(t, err, eventstore.ErrClosed)
	})
}
