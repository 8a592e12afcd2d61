package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/snapshot"
)

// runLoad loads an aggregate of LoadEvents events through the repository,
// without a snapshot and with snapshots every LoadSnapshotEvery events
// (the worst case: the newest snapshot is a whole interval behind, so the
// tail is LoadSnapshotEvery events), next to plain SELECTs of the same
// rows (the snapshot row and the tail in the second case, in one round
// trip), decoded with json.Unmarshal and folded.
func runLoad(ctx context.Context, e *env) ([]Result, error) {
	f, err := newAppendFixture(ctx, e, "bench_load")
	if err != nil {
		return nil, err
	}
	defer f.close()
	n, every := e.sizes.LoadEvents, min(e.sizes.LoadSnapshotEvery, e.sizes.LoadEvents)
	const stream = "acct-long"
	head := n - every
	evs, err := depositEvents(f.reg, 0, head)
	if err != nil {
		return nil, err
	}
	if head > 0 {
		if _, err := f.store.Import(ctx, []eventstore.StreamAppend{{StreamID: stream, Expected: eventstore.NoStream, Events: evs}}); err != nil {
			return nil, err
		}
	}
	snaps := pgstore.NewSnapshots(e.pool, f.schema)
	st, v, err := f.repo.Load(ctx, stream)
	if err != nil {
		return nil, err
	}
	state, err := snapshot.JSON{}.Marshal(st)
	if err != nil {
		return nil, err
	}
	if err := snaps.Save(ctx, snapshot.Snapshot{StreamID: stream, Version: v, SchemaVersion: 1, State: state}); err != nil {
		return nil, err
	}
	tail, err := depositEvents(f.reg, head, every)
	if err != nil {
		return nil, err
	}
	for i := 0; i < len(tail); i += 100 {
		chunk := tail[i:min(i+100, len(tail))]
		if _, err := f.store.Append(ctx, stream, eventstore.Exact(int64(head+i)), chunk...); err != nil {
			return nil, err
		}
	}
	if _, err := e.pool.Exec(ctx, "ANALYZE "+f.schema+".events"); err != nil {
		return nil, err
	}
	withSnap, err := aggregate.NewRepository(f.store, f.reg, accountDecider{},
		aggregate.WithSnapshots(snaps, snapshot.EveryN(int64(every))), aggregate.WithLogger(e.quiet))
	if err != nil {
		return nil, err
	}
	defer func() { _ = withSnap.Close() }()

	// The baselines read the same rows as hand-written code would, in the
	// same number of round trips as eskit (one), and decode them the same
	// way: every payload with json.Unmarshal into the event's Go type,
	// folded into the state (and the snapshot's state decoded first).
	const events = `SELECT tx, seq, id, stream_id, version, event_type, data, metadata, recorded_at FROM %s.events WHERE stream_id = $1 AND version > %s ORDER BY version`
	qFull := fmt.Sprintf(events, f.schema, "0")
	qTail := fmt.Sprintf(events, f.schema, fmt.Sprintf("coalesce((SELECT version FROM %s.snapshots WHERE stream_id = $1), 0)", f.schema))
	qSnap := fmt.Sprintf(`SELECT version, schema_version, state FROM %s.snapshots WHERE stream_id = $1`, f.schema)
	decodeRows := func(rows pgx.Rows, st account, want int) error {
		var (
			tx, seq, version int64
			id               uuid.UUID
			sid, typ         string
			data, md         []byte
			at               time.Time
			got              int
		)
		_, err := pgx.ForEachRow(rows, []any{&tx, &seq, &id, &sid, &version, &typ, &data, &md, &at}, func() error {
			var ev deposited
			if err := json.Unmarshal(data, &ev); err != nil {
				return err
			}
			st = accountDecider{}.Evolve(st, ev)
			got++
			return nil
		})
		if err == nil && (got != want || st.Deposits != int64(n)) {
			err = fmt.Errorf("selected %d rows (state %+v), want %d", got, st, want)
		}
		return err
	}
	load := func(r *repo) op {
		return func(ctx context.Context, _, _ int) error {
			st, v, err := r.Load(ctx, stream)
			if err == nil && (v != int64(n) || st.Deposits != int64(n)) {
				err = fmt.Errorf("loaded %+v at version %d, want %d events", st, v, n)
			}
			return err
		}
	}
	plainFull := func(ctx context.Context, _, _ int) error {
		rows, err := e.pool.Query(ctx, qFull, stream)
		if err != nil {
			return err
		}
		return decodeRows(rows, account{}, n)
	}
	plainSnap := func(ctx context.Context, _, _ int) error {
		// One round trip: the snapshot row and the rows after it, in a
		// pipelined batch.
		b := &pgx.Batch{}
		b.Queue(qSnap, stream)
		b.Queue(qTail, stream)
		br := e.pool.SendBatch(ctx, b)
		defer br.Close()
		var (
			version       int64
			schemaVersion int
			state         []byte
			st            account
		)
		if err := br.QueryRow().Scan(&version, &schemaVersion, &state); err != nil {
			return err
		}
		if err := json.Unmarshal(state, &st); err != nil {
			return err
		}
		rows, err := br.Query()
		if err != nil {
			return err
		}
		if err := decodeRows(rows, st, n-int(version)); err != nil {
			return err
		}
		return br.Close()
	}

	loads := e.sizes.Loads
	var out []Result
	for _, c := range []struct {
		variant string
		eskit   op
		base    op
		loads   int
	}{
		{"no snapshot", load(f.repo), plainFull, loads},
		// A snapshotted load reads a tenth of the rows or less: give it
		// more loads for a stable figure.
		{fmt.Sprintf("snapshot every %d", every), load(withSnap), plainSnap, loads * max(1, min(10, n/every))},
	} {
		if err := warmUp(ctx, 3, 1, c.eskit, c.base); err != nil {
			return nil, err
		}
		te, tb, err := alternate(ctx, e.mem, c.loads, e.sizes.Rounds, 1, true, c.eskit, c.base)
		if err != nil {
			return nil, err
		}
		params := map[string]any{"variant": c.variant, "events": n, "loads": c.loads,
			"p50_ms_eskit": ms(percentile(sortedCopy(te.lat), 50)), "p50_ms_baseline": ms(percentile(sortedCopy(tb.lat), 50))}
		if c.variant != "no snapshot" {
			params["snapshot_every"] = every
			params["tail_events"] = every
		}
		params["baseline"] = "plain SELECT, json.Unmarshal of every payload, fold"
		params["store"] = storeDefaults
		r := result("load", "loads/s", rate(c.loads, te.total), rate(c.loads, tb.total), params)
		out = append(out, r.withTarget(target{ratio: true, min: true, bound: 0.85}))
	}
	return out, nil
}

// runFeed reads the whole global feed with ReadAll, page by page, next to a
// plain keyset SELECT … ORDER BY tx, seq of the same rows (without the
// feed's safe point), decoded into the same records.
func runFeed(ctx context.Context, e *env) ([]Result, error) {
	f, err := newAppendFixture(ctx, e, "bench_feed")
	if err != nil {
		return nil, err
	}
	defer f.close()
	total, page := e.sizes.Feed, e.sizes.FeedPage
	for k := 0; k < total; k += 10_000 {
		appends, err := streamBatch(f.reg, fmt.Sprintf("feed-%d", k), min(10_000, total-k), 100)
		if err != nil {
			return nil, err
		}
		if _, err := f.store.Import(ctx, appends); err != nil {
			return nil, err
		}
	}
	if err := waitFeed(ctx, f.store); err != nil {
		return nil, err
	}
	q := fmt.Sprintf(`SELECT tx, seq, id, stream_id, version, event_type, data, metadata, recorded_at
FROM %s.events WHERE (tx, seq) > ($1, $2) ORDER BY tx, seq LIMIT $3`, f.schema)
	eskit := func(ctx context.Context, _, _ int) error {
		n, err := countFeed(ctx, f.store, page)
		if err == nil && n != total {
			err = fmt.Errorf("read %d records, want %d", n, total)
		}
		return err
	}
	base := func(ctx context.Context, _, _ int) error {
		var tx, seq int64
		n := 0
		for {
			rows, err := e.pool.Query(ctx, q, tx, seq, page)
			if err != nil {
				return err
			}
			recs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (eventstore.Record, error) {
				var r eventstore.Record
				var md []byte
				if err := row.Scan(&tx, &seq, &r.ID, &r.StreamID, &r.Version, &r.Type, &r.Data, &md, &r.RecordedAt); err != nil {
					return r, err
				}
				if md != nil {
					return r, json.Unmarshal(md, &r.Metadata)
				}
				return r, nil
			})
			if err != nil {
				return err
			}
			if len(recs) == 0 {
				break
			}
			n += len(recs)
		}
		if n != total {
			return fmt.Errorf("selected %d rows, want %d", n, total)
		}
		return nil
	}
	if err := warmUp(ctx, 1, 1, eskit, base); err != nil {
		return nil, err
	}
	reads := max(2, e.sizes.Rounds/2)
	te, tb, err := alternate(ctx, e.mem, reads, reads, 1, false, eskit, base)
	if err != nil {
		return nil, err
	}
	params := map[string]any{"events": total, "page": page, "reads": reads}
	return []Result{result("feed", "events/s", rate(total*reads, te.total), rate(total*reads, tb.total), params)}, nil
}

// waitFeed waits until the feed shows every committed record.
func waitFeed(ctx context.Context, s interface {
	FeedLag(context.Context) (eventstore.FeedLag, error)
}) error {
	deadline := time.Now().Add(time.Minute)
	for {
		lag, err := s.FeedLag(ctx)
		if err != nil {
			return err
		}
		if lag.Events == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the feed still trails by %d events after a minute (a long transaction on the server?)", lag.Events)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}
