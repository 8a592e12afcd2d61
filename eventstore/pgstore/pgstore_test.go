package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/internal/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/eventstore/pgstore/pgtest"
)

// newStore returns a migrated store on a fresh database.
func newStore(t *testing.T, opts ...pgstore.Option) *pgstore.Store {
	t.Helper()
	return newStoreOn(t, pgtest.Pool(t), opts...)
}

func newStoreOn(t *testing.T, pool *pgxpool.Pool, opts ...pgstore.Option) *pgstore.Store {
	t.Helper()
	s, err := pgstore.New(context.Background(), pool, append([]pgstore.Option{pgstore.WithAutoMigrate()}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s
}

func ev(typ, data string) eventstore.Event {
	return eventstore.Event{Type: typ, Data: []byte(data)}
}

func evs(n int, tag string) []eventstore.Event {
	out := make([]eventstore.Event, n)
	for i := range out {
		out[i] = eventstore.Event{ID: eventstore.NewEventID(), Type: "T", Data: fmt.Appendf(nil, `{"%s":%d}`, tag, i),
			Metadata: eventstore.Metadata{eventstore.MetaCorrelationID: tag}}
	}
	return out
}

// feed reads the whole visible feed after a position.
func feed(t *testing.T, s eventstore.FeedReader, after eventstore.Position) []eventstore.Record {
	t.Helper()
	var out []eventstore.Record
	for {
		recs, err := s.ReadAll(context.Background(), after, 7)
		require.NoError(t, err)
		if len(recs) == 0 {
			return out
		}
		out = append(out, recs...)
		after = recs[len(recs)-1].Position
	}
}

func TestNewRequiresMigratedSchema(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t)
	_, err := pgstore.New(ctx, pool)
	require.ErrorContains(t, err, "pending migrations")
	_, err = pgstore.New(ctx, pool, pgstore.WithSchema("Bad-Name"))
	require.ErrorIs(t, err, eventstore.ErrInvalidArgument)

	require.NoError(t, pgstore.Migrate(ctx, pool, pgstore.DefaultSchema))
	s, err := pgstore.New(ctx, pool)
	require.NoError(t, err)
	defer s.Close()
	require.Equal(t, pgstore.DefaultSchema, s.Schema())
	require.Same(t, pool, s.Pool())
}

func TestCustomSchemasAreIndependent(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t)
	a := newStoreOn(t, pool, pgstore.WithSchema("tenant_a"))
	b := newStoreOn(t, pool, pgstore.WithSchema("tenant_b"))
	require.Equal(t, "tenant_a", a.Schema())

	_, err := a.Append(ctx, "s", eventstore.NoStream, ev("A", "1"))
	require.NoError(t, err)
	_, err = b.Append(ctx, "s", eventstore.NoStream, ev("B", "1"), ev("B", "2"))
	require.NoError(t, err)

	va, err := a.StreamVersion(ctx, "s")
	require.NoError(t, err)
	vb, err := b.StreamVersion(ctx, "s")
	require.NoError(t, err)
	require.Equal(t, int64(1), va)
	require.Equal(t, int64(2), vb)

	var n int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM tenant_a.events").Scan(&n))
	require.Equal(t, 1, n)
}

func TestAppendAndReadRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	batch := evs(100, "big")
	res, err := s.Append(ctx, "order-1", eventstore.NoStream, batch...)
	require.NoError(t, err)
	require.Equal(t, int64(100), res.Version())
	require.False(t, res.Duplicate)

	recs, err := eventstore.Collect(s.ReadStream(ctx, "order-1", 0))
	require.NoError(t, err)
	require.Len(t, recs, 100)
	for i, r := range recs {
		require.Equal(t, batch[i].ID, r.ID)
		require.Equal(t, batch[i].Data, r.Data)
		require.Equal(t, batch[i].Metadata, r.Metadata)
		require.Equal(t, int64(i+1), r.Version)
		require.Equal(t, time.UTC, r.RecordedAt.Location())
		if i > 0 {
			// Versions and feed positions grow together within one append.
			require.True(t, recs[i-1].Position.Before(r.Position), "position of version %d", r.Version)
			require.Equal(t, recs[i-1].Position.Tx, r.Position.Tx)
		}
	}
	require.Equal(t, res.Position, recs[99].Position)

	// Nil metadata stays nil, empty metadata stays empty.
	r2, err := s.Append(ctx, "order-2", eventstore.NoStream,
		eventstore.Event{Type: "A", Data: []byte("x")},
		eventstore.Event{Type: "B", Data: []byte("y"), Metadata: eventstore.Metadata{}})
	require.NoError(t, err)
	recs, err = eventstore.Collect(s.ReadStream(ctx, "order-2", 1))
	require.NoError(t, err)
	require.Nil(t, recs[0].Metadata)
	require.NotNil(t, recs[1].Metadata)
	require.Empty(t, recs[1].Metadata)

	got, err := s.ReadEvent(ctx, recs[1].ID)
	require.NoError(t, err)
	require.Equal(t, recs[1], got)
	require.Equal(t, r2.Position, got.Position)

	require.Equal(t, r2.Position, pgtest.SettledHead(t, s))
}

func TestIdempotentReappend(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	batch := evs(3, "idem")
	first, err := s.AppendMulti(ctx,
		eventstore.StreamAppend{StreamID: "a", Expected: eventstore.NoStream, Events: batch[:2]},
		eventstore.StreamAppend{StreamID: "b", Expected: eventstore.NoStream, Events: batch[2:]})
	require.NoError(t, err)

	again, err := s.AppendMulti(ctx,
		eventstore.StreamAppend{StreamID: "a", Expected: eventstore.NoStream, Events: batch[:2]},
		eventstore.StreamAppend{StreamID: "b", Expected: eventstore.NoStream, Events: batch[2:]})
	require.NoError(t, err)
	require.True(t, again.Duplicate)
	require.Equal(t, first.Streams, again.Streams)
	require.Equal(t, first.Position, again.Position)

	// Part of the IDs, or the same IDs in another stream: a clash.
	_, err = s.Append(ctx, "a", eventstore.Any, batch[0], evs(1, "new")[0])
	var de *eventstore.DuplicateEventError
	require.ErrorAs(t, err, &de)
	require.Equal(t, batch[0].ID, de.EventID)
	_, err = s.Append(ctx, "c", eventstore.Any, batch[2])
	require.ErrorAs(t, err, &de)
	require.Equal(t, "b", de.Stream)

	v, err := s.StreamVersion(ctx, "a")
	require.NoError(t, err)
	require.Equal(t, int64(2), v)
}

// bizTable creates a business table for transaction tests.
func bizTable(t *testing.T, s *pgstore.Store) {
	t.Helper()
	_, err := s.Pool().Exec(context.Background(), "CREATE TABLE biz (id int PRIMARY KEY)")
	require.NoError(t, err)
}

func bizRows(t *testing.T, s *pgstore.Store) int {
	t.Helper()
	var n int
	require.NoError(t, s.Pool().QueryRow(context.Background(), "SELECT count(*) FROM biz").Scan(&n))
	return n
}

func TestAppendTxCommitsAndRollsBackWithBusinessRows(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	bizTable(t, s)

	err := s.InTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO biz VALUES (1)"); err != nil {
			return err
		}
		_, err := s.AppendTx(ctx, tx, eventstore.StreamAppend{StreamID: "acc-1", Expected: eventstore.NoStream, Events: evs(2, "tx")})
		return err
	})
	require.NoError(t, err)
	require.Equal(t, 1, bizRows(t, s))
	v, err := s.StreamVersion(ctx, "acc-1")
	require.NoError(t, err)
	require.Equal(t, int64(2), v)

	boom := errors.New("business rule failed")
	err = s.InTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO biz VALUES (2)"); err != nil {
			return err
		}
		if _, err := s.AppendTx(ctx, tx, eventstore.StreamAppend{StreamID: "acc-1", Expected: eventstore.Exact(2), Events: evs(1, "rb")}); err != nil {
			return err
		}
		return boom
	})
	require.ErrorIs(t, err, boom)
	require.Equal(t, 1, bizRows(t, s))
	v, err = s.StreamVersion(ctx, "acc-1")
	require.NoError(t, err)
	require.Equal(t, int64(2), v)
	waitFeedLen(t, s, 2)

	// A version conflict reported by AppendTx leaves the transaction usable.
	tx, err := s.Pool().Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = s.AppendTx(ctx, tx, eventstore.StreamAppend{StreamID: "acc-1", Expected: eventstore.Exact(7), Events: evs(1, "c")})
	checkConflict(t, err, "acc-1")
	_, err = tx.Exec(ctx, "INSERT INTO biz VALUES (3)")
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	require.Equal(t, 2, bizRows(t, s))
}

func checkConflict(t *testing.T, err error, stream string) *eventstore.ConcurrencyError {
	t.Helper()
	var ce *eventstore.ConcurrencyError
	require.ErrorAs(t, err, &ce)
	require.ErrorIs(t, err, eventstore.ErrConcurrency)
	require.True(t, eventstore.IsRetryable(err))
	require.Equal(t, stream, ce.Stream)
	return ce
}

// TestAppendTxOlderTransactionConflicts: a transaction that took its ID
// (by writing a business row) before another writer appended to a stream
// must not append to that stream after it: its events would come before
// the other writer's on the feed.
func TestAppendTxOlderTransactionConflicts(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	bizTable(t, s)
	_, err := s.Append(ctx, "S", eventstore.NoStream, ev("Opened", "0"))
	require.NoError(t, err)

	tx1, err := s.Pool().Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx1.Rollback(ctx) }()
	_, err = tx1.Exec(ctx, "INSERT INTO biz VALUES (1)") // tx1 now has a transaction ID
	require.NoError(t, err)

	r2, err := s.Append(ctx, "S", eventstore.Exact(1), ev("Deposited", "2")) // tx2: larger ID, commits
	require.NoError(t, err)

	_, err = s.AppendTx(ctx, tx1, eventstore.StreamAppend{StreamID: "S", Expected: eventstore.Any, Events: []eventstore.Event{ev("Withdrawn", "1")}})
	ce := checkConflict(t, err, "S")
	require.NotEmpty(t, ce.Reason)
	require.Equal(t, int64(2), ce.Actual)

	// The same transaction may still append to streams it does not race on.
	_, err = s.AppendTx(ctx, tx1, eventstore.StreamAppend{StreamID: "other", Expected: eventstore.NoStream, Events: []eventstore.Event{ev("X", "1")}})
	require.NoError(t, err)
	require.NoError(t, tx1.Rollback(ctx))

	// The retry, in a new transaction, succeeds after tx2's event.
	err = s.InTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO biz VALUES (1)"); err != nil {
			return err
		}
		_, err := s.AppendTx(ctx, tx, eventstore.StreamAppend{StreamID: "S", Expected: eventstore.Exact(2), Events: []eventstore.Event{ev("Withdrawn", "1")}})
		return err
	})
	require.NoError(t, err)

	recs := waitFeedLen(t, s, 3)
	var versions []int64
	for _, r := range recs {
		require.Equal(t, "S", r.StreamID)
		versions = append(versions, r.Version)
	}
	require.Equal(t, []int64{1, 2, 3}, versions, "the feed keeps per-stream order")
	require.Equal(t, r2.Position, recs[1].Position)
}

// waitFeedLen waits until the feed shows n records (other transactions of
// the cluster can hold the safe point back for a moment) and returns them.
func waitFeedLen(t *testing.T, s eventstore.FeedReader, n int) []eventstore.Record {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		recs := feed(t, s, eventstore.Position{})
		if len(recs) >= n || time.Now().After(deadline) {
			require.Len(t, recs, n)
			return recs
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestFeedStopsAtSafePointAndCatchesUp(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	r1, err := s.Append(ctx, "a", eventstore.NoStream, ev("E", "1"))
	require.NoError(t, err)
	waitFeedLen(t, s, 1)

	got := make(chan eventstore.Record, 16)
	go func() {
		for r, err := range s.Subscribe(ctx, eventstore.Position{}) {
			if err != nil {
				return
			}
			got <- r
		}
	}()
	require.Equal(t, r1.Position, (<-got).Position)

	// A transaction holding an ID older than the next appends.
	holder, err := s.Pool().Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = holder.Rollback(context.Background()) }()
	_, err = holder.Exec(ctx, "SELECT pg_current_xact_id()")
	require.NoError(t, err)

	r2, err := s.Append(ctx, "b", eventstore.NoStream, ev("E", "2"))
	require.NoError(t, err)
	r3, err := s.Append(ctx, "a", eventstore.Exact(1), ev("E", "3"))
	require.NoError(t, err)

	// The feed stops at the safe point; the lag shows what waits.
	recs, err := s.ReadAll(ctx, r1.Position, 10)
	require.NoError(t, err)
	require.Empty(t, recs)
	h, err := s.Head(ctx)
	require.NoError(t, err)
	require.Equal(t, r1.Position, h)
	lag, err := s.FeedLag(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(2), lag.Events)
	require.GreaterOrEqual(t, lag.Age, time.Duration(0))
	select {
	case r := <-got:
		t.Fatalf("subscriber got %v past the safe point", r.Position)
	default:
	}

	require.NoError(t, holder.Commit(ctx))

	// Nothing skipped: the subscriber gets both, in feed order.
	for _, want := range []eventstore.Position{r2.Position, r3.Position} {
		select {
		case r := <-got:
			require.Equal(t, want, r.Position)
		case <-time.After(10 * time.Second):
			t.Fatal("subscriber did not catch up after the holder committed")
		}
	}
	waitFeedLen(t, s, 3)
	lag, err = s.FeedLag(ctx)
	require.NoError(t, err)
	require.Zero(t, lag.Events)
}

func TestStreamIDsWithSpecialCharacters(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	ids := []string{"a.b", "a*b", "a>b", "a b", " lead", "trail ", "über/strom", `q"uote'`, "a.*.>", strings.Repeat("x", eventstore.DefaultMaxStreamIDLength)}
	for _, id := range ids {
		_, err := s.Append(ctx, id, eventstore.NoStream, ev("E", id))
		require.NoError(t, err, id)
	}
	for _, id := range ids {
		recs, err := eventstore.Collect(s.ReadStream(ctx, id, 1))
		require.NoError(t, err, id)
		require.Len(t, recs, 1, id)
		require.Equal(t, id, recs[0].StreamID)
		require.Equal(t, []byte(id), recs[0].Data)
	}
	all := waitFeedLen(t, s, len(ids))
	for i, r := range all {
		require.Equal(t, ids[i], r.StreamID)
	}
	_, err := s.StreamVersion(ctx, "a.b.")
	require.ErrorIs(t, err, eventstore.ErrStreamNotFound)
}

func TestOversizedAndMalformedAppendsWriteNothing(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, pgstore.WithLimits(eventstore.Limits{MaxEventSize: 1024}))
	big := eventstore.Event{Type: "Big", Data: make([]byte, 2048)}
	_, err := s.AppendMulti(ctx,
		eventstore.StreamAppend{StreamID: "ok", Expected: eventstore.Any, Events: []eventstore.Event{ev("E", "1")}},
		eventstore.StreamAppend{StreamID: "big", Expected: eventstore.Any, Events: []eventstore.Event{big}})
	require.ErrorIs(t, err, eventstore.ErrInvalidArgument)
	_, err = s.Append(ctx, "bad\x00id", eventstore.Any, ev("E", "1"))
	require.ErrorIs(t, err, eventstore.ErrInvalidArgument)
	_, err = s.Append(ctx, "x", eventstore.Any, eventstore.Event{Type: "E"})
	require.ErrorIs(t, err, eventstore.ErrInvalidArgument)
	_, err = s.Import(ctx, []eventstore.StreamAppend{{StreamID: "big", Expected: eventstore.NoStream, Events: []eventstore.Event{big}}})
	require.ErrorIs(t, err, eventstore.ErrInvalidArgument)
	_, err = s.StreamVersion(ctx, "ok")
	require.ErrorIs(t, err, eventstore.ErrStreamNotFound)
	require.Empty(t, feed(t, s, eventstore.Position{}))
}
