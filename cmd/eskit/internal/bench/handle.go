package bench

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/snapshot"
)

// The handle cases run commands on streams that have a history, through a
// repository configured as the README shows it: snapshots in the store's
// own schema (store.Snapshots()) every handleSnapshotEvery events.
const (
	// handleSnapshotEvery is the snapshot policy's interval
	// (snapshot.EveryN, which counts events).
	handleSnapshotEvery = 100
	// handleMaxStreams bounds the number of streams the commands go to.
	handleMaxStreams = 1000
	// handleCommandsPerStream is how many commands each stream receives
	// in the larger run, on average: it sizes the number of streams.
	handleCommandsPerStream = 12
)

// handleFixture is a store (with its defaults) holding handleStreams
// streams of 100 to 199 events each, with their snapshot at version 100 —
// the steady state of snapshot.EveryN(100): tails of 0 to 99 events,
// spread evenly. The plain table of the baseline holds a copy of the
// same rows, so that the baseline's inserts (the streams' next versions)
// meet the same table and indexes as the repository's appends.
type handleFixture struct {
	schema  string
	store   *pgstore.Store
	reg     *eventstore.Registry
	streams int
	// plainVersions are the streams' versions in the plain table.
	plainVersions []atomic.Int64
}

func newHandleFixture(ctx context.Context, e *env, schema string) (*handleFixture, error) {
	store, err := e.newStore(ctx, schema)
	if err != nil {
		return nil, err
	}
	f := &handleFixture{schema: schema, store: store}
	if f.reg, err = newRegistry(); err != nil {
		store.Close()
		return nil, err
	}
	f.streams = min(handleMaxStreams, max(64, e.sizes.Append1Parallel/handleCommandsPerStream))
	f.plainVersions = make([]atomic.Int64, f.streams)
	snaps := store.Snapshots()
	var batch []eventstore.StreamAppend
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		_, err := store.Import(ctx, batch)
		batch = batch[:0]
		return err
	}
	for k := range f.streams {
		n := handleSnapshotEvery + k*37%handleSnapshotEvery
		f.plainVersions[k].Store(int64(n))
		evs, err := depositEvents(f.reg, 0, n)
		if err != nil {
			store.Close()
			return nil, err
		}
		var st account
		for i := range handleSnapshotEvery {
			st = accountDecider{}.Evolve(st, depositedEvent(i))
		}
		state, err := snapshot.JSON{}.Marshal(st)
		if err != nil {
			store.Close()
			return nil, err
		}
		if err := snaps.Save(ctx, snapshot.Snapshot{StreamID: f.stream(k), Version: handleSnapshotEvery, SchemaVersion: 1, State: state}); err != nil {
			store.Close()
			return nil, err
		}
		batch = append(batch, eventstore.StreamAppend{StreamID: f.stream(k), Expected: eventstore.NoStream, Events: evs})
		if len(batch) == 100 {
			if err := flush(); err != nil {
				store.Close()
				return nil, err
			}
		}
	}
	if err := flush(); err != nil {
		store.Close()
		return nil, err
	}
	if _, err := e.pool.Exec(ctx, fmt.Sprintf("INSERT INTO %[1]s.plain SELECT * FROM %[1]s.events; ANALYZE %[1]s.events; ANALYZE %[1]s.snapshots; ANALYZE %[1]s.plain", schema)); err != nil {
		store.Close()
		return nil, err
	}
	// The store the commands run on opens on the filled table, as a
	// service's store does (the one that filled it still treats it as
	// small for a few seconds: see pgstore's table size check).
	store.Close()
	if f.store, err = pgstore.New(ctx, e.pool, pgstore.WithSchema(schema)); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *handleFixture) stream(k int) string { return "acct-" + strconv.Itoa(k) }

// runHandle handles one-event commands on streams with a history through
// Repository.Handle with snapshots (load: the snapshot and the tail after
// it; decide; append), without a state cache, at each concurrency, next to
// a plain INSERT of the same row (the stream's next version) in its own
// transaction, into the copy of the events table.
func runHandle(ctx context.Context, e *env) ([]Result, error) {
	return runHandleCase(ctx, e, "handle", false)
}

// runHandleCached is runHandle through a repository with a state cache
// (aggregate.WithStateCache) that has seen every stream: a command is
// decided on the cached state and appended, one round trip.
func runHandleCached(ctx context.Context, e *env) ([]Result, error) {
	return runHandleCase(ctx, e, "handle-cached", true)
}

func runHandleCase(ctx context.Context, e *env, name string, cached bool) ([]Result, error) {
	schema := "bench_handle"
	if cached {
		schema += "_cached"
	}
	f, err := newHandleFixture(ctx, e, schema)
	if err != nil {
		return nil, err
	}
	defer f.store.Close()
	opts := []aggregate.Option{aggregate.WithLogger(e.quiet),
		aggregate.WithSnapshots(f.store.Snapshots(), snapshot.EveryN(handleSnapshotEvery))}
	if cached {
		opts = append(opts, aggregate.WithStateCache(appendCacheSize))
	}
	r, err := aggregate.NewRepository(f.store, f.reg, accountDecider{}, opts...)
	if err != nil {
		return nil, err
	}
	defer func() { _ = r.Close() }()
	if cached {
		// A running service has seen its hot streams: load each once.
		if _, err := parallel(ctx, 0, f.streams, 8, func(ctx context.Context, _, k int) error {
			_, _, err := r.Load(ctx, f.stream(k))
			return err
		}); err != nil {
			return nil, fmt.Errorf("warm the state cache: %w", err)
		}
	}
	var out []Result
	for _, c := range e.sizes.AppendConcurrency {
		res, err := runHandleAt(ctx, e, f, r, name, c, cached)
		if err != nil {
			return nil, err
		}
		out = append(out, res)
	}
	return out, nil
}

// Figures of the goes library's equivalent of the handle case (a command
// on a stream with snapshots every 100 events), measured on this machine
// when the issue about the default path was filed.
var goesHandle = map[int]float64{1: 1900, 32: 6848}

func runHandleAt(ctx context.Context, e *env, f *handleFixture, r *repo, name string, c int, cached bool) (Result, error) {
	insert := plainInsert(f.schema)
	n := e.sizes.Append1
	if c > 1 {
		n = e.sizes.Append1Parallel
	}
	// Command i goes to stream i mod streams: concurrent commands are on
	// different streams (conflicts are possible, and retried, but rare).
	eskit := func(ctx context.Context, _, i int) error {
		_, err := r.Handle(ctx, f.stream(i%f.streams), deposit{Amount: int64(i%1000 + 1)})
		return err
	}
	// The same row the repository writes: the event encoded by the
	// registry, the stream's next version.
	base := func(ctx context.Context, _, i int) error {
		k := i % f.streams
		row, err := encodeRow(f.reg, deposited{Amount: int64(i%1000 + 1), Currency: "EUR", Note: "benchmark"}, nil)
		if err != nil {
			return err
		}
		_, err = e.pool.Exec(ctx, insert, row.id, f.stream(k), f.plainVersions[k].Add(1), row.typ, row.data, row.metadata)
		return err
	}
	variant := "c=" + strconv.Itoa(c)
	if err := warmUp(ctx, min(n/10, 100)+c, c, eskit, base); err != nil {
		return Result{}, err
	}
	te, tb, err := alternate(ctx, e.mem, n, e.sizes.Rounds, c, c == 1, eskit, base)
	if err != nil {
		return Result{}, err
	}
	params := map[string]any{"variant": variant, "concurrency": c, "commands": n, "rounds": e.sizes.Rounds,
		"streams": f.streams, "snapshot_every_events": handleSnapshotEvery, "tail_events": "0-99", "cache": cached,
		"baseline": "one plain INSERT of the same row (the stream's next version) in its own transaction, into a copy of the events table",
		"store":    storeDefaults}
	if cached {
		params["cache_size"] = appendCacheSize
	}
	if g, ok := goesHandle[c]; ok && !cached {
		params["goes_commands_per_s"] = g
	}
	if c == 1 {
		params["p50_ms_eskit"] = ms(percentile(sortedCopy(te.lat), 50))
		params["p50_ms_baseline"] = ms(percentile(sortedCopy(tb.lat), 50))
	}
	res := result(name, "commands/s", rate(n, te.total), rate(n, tb.total), params)
	bound := 0.45
	switch {
	case cached && c == 1:
		bound = 0.9
	case cached:
		bound = 0.85
	}
	return res.withTarget(target{ratio: true, min: true, bound: bound}), nil
}
