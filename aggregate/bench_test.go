package aggregate_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/aggregate/internal/account"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/eventstore/pgstore/pgtest"
	"github.com/eskit/eskit/snapshot"
)

// depositEvents encodes n deposits of 1 (preceded by Opened when open).
func depositEvents(b *testing.B, reg *eventstore.Registry, n int, open bool) []eventstore.Event {
	b.Helper()
	evs := make([]eventstore.Event, 0, n)
	if open {
		e, err := reg.Encode(account.Opened{Owner: "ann"}, nil)
		if err != nil {
			b.Fatal(err)
		}
		evs = append(evs, e)
	}
	for len(evs) < n {
		e, err := reg.Encode(account.Deposited{Amount: 1}, eventstore.Metadata{eventstore.MetaCorrelationID: uuid.NewString()})
		if err != nil {
			b.Fatal(err)
		}
		evs = append(evs, e)
	}
	return evs
}

// BenchmarkLoad compares loading a 100,000-event stream with and without a
// snapshot (taken every 1,000 events, so the tail is at most 1,000 events;
// here the worst case, exactly 1,000) against loading a 1,000-event stream
// and against a raw pgx SELECT of the 100,000 rows.
//
// Metrics: events/s counts the events of the stream's state (100,000 for
// the long stream); x-load-1k and x-raw-select are the ns/op ratios to the
// Load-1k and Raw-pgx-100k sub-benchmarks (reported when those ran first).
func BenchmarkLoad(b *testing.B) {
	const (
		long  = 100_000
		every = 1_000
		short = 1_000
	)
	ctx := context.Background()
	pool := pgtest.Pool(b)
	store, err := pgstore.New(ctx, pool, pgstore.WithAutoMigrate())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(store.Close)
	snaps := pgstore.NewSnapshots(pool, pgstore.DefaultSchema)
	reg := registry(b)

	// The long stream: the first long-every events by bulk import, the
	// last snapshot at that version, then the final 1,000 events in one
	// append (as if the next snapshot were still to come).
	start := time.Now()
	if _, err := store.Import(ctx, []eventstore.StreamAppend{
		{StreamID: "acc-long", Expected: eventstore.NoStream, Events: depositEvents(b, reg, long-every, true)},
		{StreamID: "acc-short", Expected: eventstore.NoStream, Events: depositEvents(b, reg, short, true)},
	}); err != nil {
		b.Fatal(err)
	}
	plain, err := aggregate.NewRepository(store, reg, account.Decider{})
	if err != nil {
		b.Fatal(err)
	}
	st, v, err := plain.Load(ctx, "acc-long")
	if err != nil || v != long-every {
		b.Fatalf("load: %d, %v", v, err)
	}
	data, err := snapshot.JSON{}.Marshal(st)
	if err != nil {
		b.Fatal(err)
	}
	if err := snaps.Save(ctx, snapshot.Snapshot{StreamID: "acc-long", Version: v, SchemaVersion: 1, State: data}); err != nil {
		b.Fatal(err)
	}
	if _, err := store.Append(ctx, "acc-long", eventstore.Exact(v), depositEvents(b, reg, every, false)...); err != nil {
		b.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `ANALYZE `+pgstore.DefaultSchema+`.events`); err != nil {
		b.Fatal(err)
	}
	b.Logf("built %d + %d events in %v", long, short, time.Since(start))

	withSnap, err := aggregate.NewRepository(store, reg, account.Decider{},
		aggregate.WithSnapshots(snaps, snapshot.EveryN(every)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = withSnap.Close() })

	var nsLoad1k, nsRaw float64
	nsPerOp := func(b *testing.B) float64 { return float64(b.Elapsed().Nanoseconds()) / float64(b.N) }
	load := func(b *testing.B, r *repo, stream string, want int64) {
		b.Helper()
		for b.Loop() {
			st, v, err := r.Load(ctx, stream)
			if err != nil || v != want || st.Balance != want-1 {
				b.Fatalf("Load(%s) = %+v at %d, %v; want version %d", stream, st, v, err, want)
			}
		}
		b.ReportMetric(float64(want)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
	}

	b.Run("Load-1k", func(b *testing.B) {
		load(b, plain, "acc-short", short)
		nsLoad1k = nsPerOp(b)
	})
	b.Run("Raw-pgx-100k", func(b *testing.B) {
		q := `SELECT tx, seq, id, stream_id, version, event_type, data, metadata, recorded_at
FROM ` + pgstore.DefaultSchema + `.events WHERE stream_id = $1 ORDER BY version`
		for b.Loop() {
			rows, err := pool.Query(ctx, q, "acc-long")
			if err != nil {
				b.Fatal(err)
			}
			var (
				tx, seq, version int64
				id               uuid.UUID
				stream, typ      string
				data, md         []byte
				at               time.Time
				n                int
			)
			_, err = pgx.ForEachRow(rows, []any{&tx, &seq, &id, &stream, &version, &typ, &data, &md, &at}, func() error {
				n++
				return nil
			})
			if err != nil || n != long {
				b.Fatalf("raw select: %d rows, %v", n, err)
			}
		}
		b.ReportMetric(float64(long)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
		nsRaw = nsPerOp(b)
	})
	b.Run("Load-100k-no-snapshot", func(b *testing.B) {
		load(b, plain, "acc-long", long)
		if nsRaw > 0 {
			b.ReportMetric(nsPerOp(b)/nsRaw, "x-raw-select")
		}
		if nsLoad1k > 0 {
			b.ReportMetric(nsPerOp(b)/nsLoad1k, "x-load-1k")
		}
	})
	b.Run("Load-100k-with-snapshot", func(b *testing.B) {
		load(b, withSnap, "acc-long", long)
		if nsLoad1k > 0 {
			b.ReportMetric(nsPerOp(b)/nsLoad1k, "x-load-1k")
		}
	})
}

// BenchmarkHandle measures one command (load, decide, append) on a short
// stream, on PostgreSQL.
func BenchmarkHandle(b *testing.B) {
	ctx := context.Background()
	pool := pgtest.Pool(b)
	store, err := pgstore.New(ctx, pool, pgstore.WithAutoMigrate())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(store.Close)
	r, err := aggregate.NewRepository(store, registry(b), account.Decider{},
		aggregate.WithSnapshots(pgstore.NewSnapshots(pool, pgstore.DefaultSchema), snapshot.EveryN(100)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = r.Close() })
	if _, err := r.Handle(ctx, "acc-1", account.Open{Owner: "ann"}); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := r.Handle(ctx, "acc-1", account.Deposit{Amount: 1}, aggregate.WithCommandID(uuid.New())); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commands/s")
}
