package pgstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/eventstore/pgstore/pgtest"
)

// benchStore returns a migrated store and a plain table with the events
// table's shape and indexes, for the raw pgx baselines. The store sends no
// cross-process notifications unless opts turn them on.
func benchStore(b *testing.B, pool *pgxpool.Pool, opts ...pgstore.Option) *pgstore.Store {
	b.Helper()
	ctx := context.Background()
	opts = append([]pgstore.Option{pgstore.WithAutoMigrate(), pgstore.WithNotify(false)}, opts...)
	s, err := pgstore.New(ctx, pool, opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Close)
	if _, err := pool.Exec(ctx, "CREATE TABLE plain (LIKE eskit.events INCLUDING ALL)"); err != nil {
		b.Fatal(err)
	}
	return s
}

func payload(i int) []byte {
	return fmt.Appendf(nil, `{"amount":%d,"currency":"EUR","note":"benchmark"}`, i)
}

var benchMeta = eventstore.Metadata{eventstore.MetaCorrelationID: "0190b2a4-7f1c-7c3e-9a51-3f5d2e8b6c11"}

var benchMetaJSON = []byte(`{"correlation_id":"0190b2a4-7f1c-7c3e-9a51-3f5d2e8b6c11"}`)

func benchEvent(i int) eventstore.Event {
	return eventstore.Event{ID: eventstore.NewEventID(), Type: "Deposited", Data: payload(i), Metadata: benchMeta}
}

const plainInsert = `INSERT INTO plain (tx, id, stream_id, version, event_type, data, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7)`

const plainInsertMany = `INSERT INTO plain (tx, id, stream_id, version, event_type, data, metadata)
SELECT 0, u.id, $1, u.v, u.t, u.d, u.m FROM unnest($2::uuid[], $3::bigint[], $4::text[], $5::bytea[], $6::bytea[]) AS u(id, v, t, d, m)`

// report records eskit's and the baseline's rates and their ratio.
func report(b *testing.B, events int, eskit, base time.Duration) {
	b.Helper()
	e := float64(events) / eskit.Seconds()
	r := float64(events) / base.Seconds()
	b.ReportMetric(e, "events/s")
	b.ReportMetric(r, "baseline-events/s")
	b.ReportMetric(e/r, "ratio")
}

// parallel runs n operations on workers goroutines and returns the time.
func parallel(b *testing.B, n, workers int, op func(worker, i int) error) time.Duration {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, workers)
	start := time.Now()
	for w := range workers {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				if err := op(w, i); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	d := time.Since(start)
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	return d
}

// alternate runs n operations of eskit and n of the baseline, in rounds
// that alternate between the two so that both see the same background load
// on a shared machine, and returns the time each took.
func alternate(b *testing.B, n, workers int, eskitOp, baseOp func(worker, i int) error) (eskit, base time.Duration) {
	b.Helper()
	const rounds = 10
	var eLat, bLat []time.Duration
	timed := func(op func(w, i int) error, lat *[]time.Duration) func(w, i int) error {
		if workers != 1 {
			return op
		}
		return func(w, i int) error {
			start := time.Now()
			err := op(w, i)
			*lat = append(*lat, time.Since(start))
			return err
		}
	}
	e, bo := timed(eskitOp, &eLat), timed(baseOp, &bLat)
	for r := range rounds {
		lo, hi := n*r/rounds, n*(r+1)/rounds
		eskit += parallel(b, hi-lo, workers, func(w, i int) error { return e(w, lo+i) })
		base += parallel(b, hi-lo, workers, func(w, i int) error { return bo(w, lo+i) })
	}
	if workers == 1 && n > 0 {
		// Medians resist the noise of a shared machine better than rates.
		slices.Sort(eLat)
		slices.Sort(bLat)
		b.ReportMetric(float64(eLat[n/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(bLat[n/2].Microseconds()), "baseline-p50-µs")
	}
	return eskit, base
}

// BenchmarkAppend1 appends one event per call with an exact expected
// version, next to a plain single-row INSERT.
func BenchmarkAppend1(b *testing.B) {
	for _, workers := range []int{1, 32} {
		b.Run(fmt.Sprintf("clients=%d", workers), func(b *testing.B) {
			ctx := context.Background()
			pool := pgtest.Pool(b)
			s := benchStore(b, pool)
			versions := make([]int64, workers)
			baseVersions := make([]int64, workers)
			b.ResetTimer()
			eskit, base := alternate(b, b.N, workers, func(w, i int) error {
				_, err := s.Append(ctx, fmt.Sprintf("acc-%d", w), eventstore.Exact(versions[w]), benchEvent(i))
				versions[w]++
				return err
			}, func(w, i int) error {
				baseVersions[w]++
				e := benchEvent(i)
				_, err := pool.Exec(ctx, plainInsert, 0, e.ID, fmt.Sprintf("acc-%d", w), baseVersions[w], e.Type, e.Data, benchMetaJSON)
				return err
			})
			b.StopTimer()
			report(b, b.N, eskit, base)
		})
	}
}

// BenchmarkAppend100 appends 100 events per call, next to a plain unnest
// INSERT of the same rows.
func BenchmarkAppend100(b *testing.B) {
	ctx := context.Background()
	pool := pgtest.Pool(b)
	s := benchStore(b, pool)
	const n = 100
	batches := func(k int) []eventstore.Event {
		out := make([]eventstore.Event, n)
		for i := range out {
			out[i] = benchEvent(k*n + i)
		}
		return out
	}
	b.ResetTimer()
	eskit, base := alternate(b, b.N, 1, func(_, k int) error {
		_, err := s.Append(ctx, fmt.Sprintf("s-%d", k), eventstore.NoStream, batches(k)...)
		return err
	}, func(_, k int) error {
		evs := batches(k)
		ids, vs, ts, ds, ms := make([]uuid.UUID, n), make([]int64, n), make([]string, n), make([][]byte, n), make([][]byte, n)
		for i, e := range evs {
			ids[i], vs[i], ts[i], ds[i], ms[i] = e.ID, int64(i+1), e.Type, e.Data, benchMetaJSON
		}
		_, err := pool.Exec(ctx, plainInsertMany, fmt.Sprintf("s-%d", k), ids, vs, ts, ds, ms)
		return err
	})
	b.StopTimer()
	report(b, b.N*n, eskit, base)
}

// BenchmarkImport imports 10,000 events (100 streams of 100) per call, next
// to a raw CopyFrom of the same rows.
func BenchmarkImport(b *testing.B) {
	ctx := context.Background()
	pool := pgtest.Pool(b)
	s := benchStore(b, pool)
	const streams, per = 100, 100
	make1 := func(k int) []eventstore.StreamAppend {
		out := make([]eventstore.StreamAppend, streams)
		for i := range out {
			evs := make([]eventstore.Event, per)
			for j := range evs {
				evs[j] = benchEvent(j)
			}
			out[i] = eventstore.StreamAppend{StreamID: fmt.Sprintf("imp-%d-%d", k, i), Expected: eventstore.NoStream, Events: evs}
		}
		return out
	}
	b.ResetTimer()
	var eskit, base time.Duration
	for k := range b.N {
		b.StopTimer()
		batch := make1(k)
		b.StartTimer()
		start := time.Now()
		if _, err := s.Import(ctx, batch); err != nil {
			b.Fatal(err)
		}
		eskit += time.Since(start)

		b.StopTimer()
		batch = make1(k)
		rows := make([][]any, 0, streams*per)
		for _, a := range batch {
			for j, e := range a.Events {
				rows = append(rows, []any{int64(0), e.ID, a.StreamID, int64(j + 1), e.Type, e.Data, benchMetaJSON})
			}
		}
		b.StartTimer()
		start = time.Now()
		if _, err := pool.CopyFrom(ctx, pgx.Identifier{"plain"}, []string{"tx", "id", "stream_id", "version", "event_type", "data", "metadata"}, pgx.CopyFromRows(rows)); err != nil {
			b.Fatal(err)
		}
		base += time.Since(start)
	}
	b.StopTimer()
	report(b, b.N*streams*per, eskit, base)
}

// BenchmarkReadAll pages through a 20,000-event feed 1,000 records at a
// time, next to a plain keyset SELECT ... ORDER BY without the safe point.
func BenchmarkReadAll(b *testing.B) {
	ctx := context.Background()
	pool := pgtest.Pool(b)
	s := benchStore(b, pool)
	const total = 20_000
	batch := make([]eventstore.StreamAppend, 200)
	for i := range batch {
		evs := make([]eventstore.Event, total/len(batch))
		for j := range evs {
			evs[j] = benchEvent(j)
		}
		batch[i] = eventstore.StreamAppend{StreamID: fmt.Sprintf("f-%d", i), Expected: eventstore.NoStream, Events: evs}
	}
	if _, err := s.Import(ctx, batch); err != nil {
		b.Fatal(err)
	}
	waitLag(b, s)
	const plainPage = `SELECT tx, seq, id, stream_id, version, event_type, data, metadata, recorded_at
FROM eskit.events WHERE (tx, seq) > ($1, $2) ORDER BY tx, seq LIMIT $3`
	b.ResetTimer()
	var eskit, base time.Duration
	for range b.N {
		start := time.Now()
		n, after := 0, eventstore.Position{}
		for {
			recs, err := s.ReadAll(ctx, after, 1000)
			if err != nil {
				b.Fatal(err)
			}
			if len(recs) == 0 {
				break
			}
			n += len(recs)
			after = recs[len(recs)-1].Position
		}
		eskit += time.Since(start)
		if n != total {
			b.Fatalf("read %d of %d", n, total)
		}
		start = time.Now()
		n = 0
		var tx, seq int64
		for {
			rows, _ := pool.Query(ctx, plainPage, tx, seq, 1000)
			recs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (eventstore.Record, error) {
				var r eventstore.Record
				var md []byte
				if err := row.Scan(&tx, &seq, &r.ID, &r.StreamID, &r.Version, &r.Type, &r.Data, &md, &r.RecordedAt); err != nil {
					return r, err
				}
				if md != nil {
					err := json.Unmarshal(md, &r.Metadata)
					return r, err
				}
				return r, nil
			})
			if err != nil {
				b.Fatal(err)
			}
			if len(recs) == 0 {
				break
			}
			n += len(recs)
		}
		base += time.Since(start)
	}
	b.StopTimer()
	report(b, b.N*total, eskit, base)
}

func waitLag(b *testing.B, s *pgstore.Store) {
	b.Helper()
	for {
		lag, err := s.FeedLag(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if lag.Events == 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkSubscribeLatency appends one event at a time and measures the
// time from Append's return (the commit) to the delivery of the event to a
// subscriber of the same Store, and of a second Store on another pool.
func BenchmarkSubscribeLatency(b *testing.B) {
	for _, remote := range []bool{false, true} {
		name := "same-store"
		if remote {
			name = "other-pool"
		}
		b.Run(name, func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			url := pgtest.Database(b)
			// Other processes learn of commits through the writer's
			// notifications.
			writer := benchStore(b, pgtest.PoolFor(b, url), pgstore.WithNotify(true))
			reader := writer
			if remote {
				var err error
				reader, err = pgstore.New(ctx, pgtest.PoolFor(b, url))
				if err != nil {
					b.Fatal(err)
				}
				defer reader.Close()
			}
			delivered := make(chan time.Time, 1)
			go func() {
				for _, err := range reader.Subscribe(ctx, eventstore.Position{}) {
					if err != nil {
						return
					}
					delivered <- time.Now()
				}
			}()
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				if _, err := writer.Append(ctx, "s", eventstore.Exact(int64(i)), benchEvent(i)); err != nil {
					b.Fatal(err)
				}
				committed := time.Now()
				select {
				case at := <-delivered:
					lat = append(lat, max(at.Sub(committed), 0))
				case <-time.After(10 * time.Second):
					b.Fatal("event not delivered")
				}
			}
			elapsed := time.Since(start)
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
		})
	}
}
