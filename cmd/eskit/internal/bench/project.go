package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/natsevent"
	"github.com/eskit/eskit/projection"
)

// projectFixture is a store holding the events the projections apply.
type projectFixture struct {
	store *pgstore.Store
	reg   *eventstore.Registry
	recs  []eventstore.Record
	head  eventstore.Position
}

func newProjectFixture(ctx context.Context, e *env, schema string, total int) (*projectFixture, error) {
	store, err := e.newStore(ctx, schema)
	if err != nil {
		return nil, err
	}
	f := &projectFixture{store: store}
	if f.reg, err = newRegistry(); err != nil {
		store.Close()
		return nil, err
	}
	for k := 0; k < total; k += 10_000 {
		appends, err := streamBatch(f.reg, "acct-"+strconv.Itoa(k), min(10_000, total-k), 100)
		if err != nil {
			store.Close()
			return nil, err
		}
		if _, err := store.Import(ctx, appends); err != nil {
			store.Close()
			return nil, err
		}
	}
	if f.recs, err = readFrom(ctx, store, eventstore.Position{}, total); err != nil {
		store.Close()
		return nil, err
	}
	f.head = f.recs[len(f.recs)-1].Position
	return f, nil
}

// runnerOptions are the options of every runner of the bench.
func (e *env) runnerOptions(prefix string, opts ...projection.Option) []projection.Option {
	return append([]projection.Option{projection.WithPrefix(prefix), projection.WithLogger(e.quiet),
		projection.WithLease(2*time.Second, 500*time.Millisecond)}, opts...)
}

// startRunner runs r until the returned function is called.
func startRunner(ctx context.Context, r *projection.Runner) (stop func() error) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	return func() error { cancel(); return <-done }
}

// waitActive waits until r holds every one of the projection's
// partitions' leases.
func waitActive(ctx context.Context, r *projection.Runner, name string, partitions int) error {
	deadline := time.Now().Add(30 * time.Second)
	for len(r.Held(name)) < partitions {
		if time.Now().After(deadline) {
			return fmt.Errorf("runner did not become active for %s (holds partitions %v of %d)", name, r.Held(name), partitions)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}

func waitFor(ctx context.Context, r *projection.Runner, pos eventstore.Position) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	return r.WaitFor(ctx, projectionName, pos)
}

// projectOn is where a projection case runs: the Redis that eskit's
// runner and the baseline write to, and the baseline itself.
type projectOn struct {
	// name is the result's name; schema and stream name the case's store
	// schema and JetStream stream.
	name, schema, stream string
	// events is how many events the projection applies.
	events int
	rdb    redis.UniversalClient
	// partitions is the projection's number of partitions.
	partitions int
	// rawBatch writes what the projection writes for one batch of records
	// (and the batch's checkpoint) into ns, as a hand-written projector
	// would; the baselines read the records from JetStream or the store
	// and write them in batches of projection.DefaultBatchSize.
	rawBatch func(ctx context.Context, reg *eventstore.Registry, ns projection.Namespace, recs []eventstore.Record) error
	// clean deletes every key that starts with prefix.
	clean func(ctx context.Context, prefix string) error
	// target and project, when set, are the runner's target and
	// projection (Redis on rdb and balances otherwise).
	target  projection.Target
	project func(reg *eventstore.Registry) projection.Projection
	// params are added to the result's.
	params map[string]any
}

// runnerOn returns the runner's target and projection.
func (on projectOn) runnerOn(reg *eventstore.Registry) (projection.Target, projection.Projection) {
	target, proj := on.target, balances(reg, nil, on.partitions)
	if target == nil {
		target = projection.Redis(on.rdb)
	}
	if on.project != nil {
		proj = on.project(reg)
	}
	return target, proj
}

// standalone is the single Redis server of the run, with a projection of
// one partition and TxPipelined batches as the baseline.
func (e *env) standalone(name, schema, stream string) projectOn {
	return projectOn{name: name, schema: schema, stream: stream, events: e.sizes.Project, rdb: e.rdb, partitions: 1,
		rawBatch: func(ctx context.Context, reg *eventstore.Registry, ns projection.Namespace, recs []eventstore.Record) error {
			return rawProject(ctx, e.rdb, reg, ns, recs, len(recs))
		},
		clean: func(ctx context.Context, prefix string) error { return deletePrefix(ctx, e.rdb, prefix) },
	}
}

// runProjectRebuild measures Runner.Rebuild (a new namespace built from
// the store's feed, then switched to) next to a hand-written projector
// (rawRebuild) that pages through the events table with a keyset SELECT
// and writes each page as one TxPipelined batch of the same writes plus a
// checkpoint.
func runProjectRebuild(ctx context.Context, e *env) ([]Result, error) {
	res, err := projectRebuild(ctx, e, e.standalone("project-rebuild", "bench_rebuild", ""))
	if err != nil {
		return nil, err
	}
	return []Result{res.withTarget(target{min: true, bound: 100_000})}, nil
}

// projectRebuild measures Runner.Rebuild on on next to on's baseline.
func projectRebuild(ctx context.Context, e *env, on projectOn) (Result, error) {
	f, err := newProjectFixture(ctx, e, on.schema, on.events)
	if err != nil {
		return Result{}, err
	}
	defer f.store.Close()
	prefix := e.prefix + "rebuild:"
	r, err := projection.NewRunner(on.rdb, f.store, []projection.Projection{balances(f.reg, nil, on.partitions)}, e.runnerOptions(prefix)...)
	if err != nil {
		return Result{}, err
	}
	stop := startRunner(ctx, r)
	defer func() { _ = stop() }()
	if err := waitActive(ctx, r, projectionName, on.partitions); err != nil {
		return Result{}, err
	}
	// The first build doubles as the warm-up.
	if err := waitFor(ctx, r, f.head); err != nil {
		return Result{}, err
	}
	feed := feedQuery(on.schema)
	raw := func(round int) func() error {
		ns := projection.Namespace{Prefix: e.prefix + "raw:", Projection: projectionName, Version: int64(round + 1), Partitions: on.partitions}
		return func() error {
			n, err := rawRebuild(ctx, e.pool, feed, projection.DefaultBatchSize, func(recs []eventstore.Record) error {
				return on.rawBatch(ctx, f.reg, ns, recs)
			})
			if err == nil && n != len(f.recs) {
				err = fmt.Errorf("baseline read %d records, want %d", n, len(f.recs))
			}
			return err
		}
	}
	if err := raw(0)(); err != nil {
		return Result{}, fmt.Errorf("warm-up: baseline: %w", err)
	}
	rounds := max(2, e.sizes.Rounds/2)
	var te, tb time.Duration
	for i := range rounds {
		d, err := timedSide(e.mem, sideEskit, func() error { return r.Rebuild(ctx, projectionName) })
		if err != nil {
			return Result{}, err
		}
		db, err := timedSide(e.mem, sideBase, raw(i+1))
		if err != nil {
			return Result{}, err
		}
		te, tb = te+d, tb+db
		if err := on.clean(ctx, e.prefix+"raw:"); err != nil {
			return Result{}, err
		}
	}
	n := len(f.recs) * rounds
	params := map[string]any{"events": len(f.recs), "rounds": rounds, "batch": projection.DefaultBatchSize, "partitions": on.partitions}
	for k, v := range on.params {
		params[k] = v
	}
	return result(on.name, "events/s", rate(n, te), rate(n, tb), params), nil
}

// rawRebuild is the rebuild baseline, a minimal hand-written projector
// rebuilding from the store: it pages through the events table in feed
// order with query (see rawPages) from the start, writing each page with
// write, until a page comes back empty. It returns how many records it
// wrote.
func rawRebuild(ctx context.Context, pool *pgxpool.Pool, query string, batch int, write func(recs []eventstore.Record) error) (int, error) {
	n, _, err := rawPages(ctx, pool, query, eventstore.Position{}, 0, batch, write)
	return n, err
}

// rawPages reads the events table in feed order as a hand-written reader
// does: query is a keyset SELECT of a record's columns (tx, seq, id,
// stream_id, version, event_type, data, metadata, recorded_at) after a
// (tx, seq) position, limited to $3 rows. It pages from after, at most
// batch rows a page, scans each row into a record and hands each page to
// write, until it has read limit records (0: until a page comes back
// empty). It returns how many records it read and the last one's position.
func rawPages(ctx context.Context, pool *pgxpool.Pool, query string, after eventstore.Position, limit, batch int,
	write func(recs []eventstore.Record) error) (int, eventstore.Position, error) {
	tx, seq := int64(after.Tx), int64(after.Seq)
	n := 0
	for limit == 0 || n < limit {
		size := batch
		if limit > 0 {
			size = min(batch, limit-n)
		}
		rows, err := pool.Query(ctx, query, tx, seq, size)
		if err != nil {
			return n, after, err
		}
		recs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (eventstore.Record, error) {
			var r eventstore.Record
			var md []byte
			if err := row.Scan(&tx, &seq, &r.ID, &r.StreamID, &r.Version, &r.Type, &r.Data, &md, &r.RecordedAt); err != nil {
				return r, err
			}
			r.Position = eventstore.Position{Tx: uint64(tx), Seq: uint64(seq)}
			if md != nil {
				return r, json.Unmarshal(md, &r.Metadata)
			}
			return r, nil
		})
		if err != nil {
			return n, after, err
		}
		if len(recs) == 0 {
			if limit == 0 {
				return n, after, nil
			}
			// The feed does not show every record yet (a transaction older
			// than the import's is still open): look again.
			if err := backoff.Sleep(ctx, time.Millisecond); err != nil {
				return n, after, err
			}
			continue
		}
		if err := write(recs); err != nil {
			return n, after, err
		}
		n += len(recs)
		after = recs[len(recs)-1].Position
	}
	return n, after, nil
}

// feedQuery is rawPages' query on the events table of schema.
func feedQuery(schema string) string {
	return fmt.Sprintf(`SELECT tx, seq, id, stream_id, version, event_type, data, metadata, recorded_at
FROM %s.events WHERE (tx, seq) > ($1, $2) ORDER BY tx, seq LIMIT $3`, schema)
}

// liveOnly is a feed without history, so that a runner gets every record
// from JetStream: it reads nothing and its head is the start (so a first
// build has nothing to replay and is done at once).
type liveOnly struct{ projection.Source }

func (liveOnly) ReadAll(context.Context, eventstore.Position, int) ([]eventstore.Record, error) {
	return nil, nil
}

func (liveOnly) Head(context.Context) (eventstore.Position, error) { return eventstore.Position{}, nil }

// waitApplied waits until every partition has applied the last of recs it
// applies. (Without history, a partition's checkpoint advances with its own
// records only, so it never reaches a position of another partition's.)
func waitApplied(ctx context.Context, r *projection.Runner, recs []eventstore.Record, partitions int) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	last := make(map[int]eventstore.Record, partitions)
	for _, rec := range recs {
		last[eventstore.StreamPartition(rec.StreamID, partitions)] = rec
	}
	for _, rec := range last {
		if err := r.WaitForStream(ctx, projectionName, rec.StreamID, rec.Position); err != nil {
			return err
		}
	}
	return nil
}

// runProjectLive measures a runner applying records delivered by its
// durable JetStream consumer, next to a hand-written projector (rawLive)
// that consumes the same messages from a durable consumer of its own,
// decodes them with natsevent.DecodeMsg and writes each batch as one
// TxPipelined batch of the same writes plus a checkpoint. Every round
// either side starts with a fresh consumer (delivering the whole stream)
// and key prefix; eskit's round starts a fresh runner too.
func runProjectLive(ctx context.Context, e *env) ([]Result, error) {
	res, err := projectLive(ctx, e, e.standalone("project-live", "bench_live", "live"))
	if err != nil {
		return nil, err
	}
	return []Result{res.withTarget(target{ratio: true, min: true, bound: 0.8, maxRSS: 2})}, nil
}

// liveConsumers creates, for a runner with consumer prefix cp, the durable
// consumers of every partition of the projection, delivering the whole
// stream from its start (a runner creates missing ones delivering new
// messages only), and returns their names. They filter as the runner's own
// would: each partition's buckets where the server takes several filters,
// else the relay's whole subject space.
func liveConsumers(ctx context.Context, js jetstream.JetStream, stream, subjectPrefix, cp string, partitions int) ([]string, error) {
	multi := partitions > 1 && natsevent.CheckJetStream(ctx, js, natsevent.FeatureMultiFilter) == nil
	names := make([]string, 0, partitions)
	for p := range partitions {
		cfg := liveConsumerConfig(projection.ConsumerName(cp, projectionName), subjectPrefix)
		if partitions > 1 {
			cfg.Durable += "_p" + strconv.Itoa(p) + "of" + strconv.Itoa(partitions)
		}
		if multi {
			filters, err := natsevent.PartitionFilters(subjectPrefix, p, partitions)
			if err != nil {
				return nil, err
			}
			cfg.FilterSubject, cfg.FilterSubjects = "", filters
		}
		if _, err := js.CreateConsumer(ctx, stream, cfg); err != nil {
			return nil, fmt.Errorf("consumer %s: %w", cfg.Durable, err)
		}
		names = append(names, cfg.Durable)
	}
	return names, nil
}

// liveConsumerConfig is the configuration of a durable consumer that
// delivers the relay's whole subject space from the stream's start, with
// the runner's ack policy and ack window.
func liveConsumerConfig(durable, subjectPrefix string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable: durable, DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy: jetstream.AckAllPolicy, MaxAckPending: max(4*projection.DefaultBatchSize, 10_000),
		FilterSubject: subjectPrefix + ".>",
	}
}

// deleteConsumers deletes the named consumers of a stream.
func deleteConsumers(ctx context.Context, js jetstream.JetStream, stream string, names ...string) error {
	var errs []error
	for _, name := range names {
		if err := js.DeleteConsumer(ctx, stream, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			errs = append(errs, fmt.Errorf("delete consumer %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// rawLive is the live baseline, a minimal hand-written projector: it
// creates a durable consumer (liveConsumerConfig) and reads it through the
// client's prefetching iterator (the runner's pull size, 2 batches); it
// takes a batch of the messages that arrive within projection.DefaultMaxWait
// of its first one, up to batch, decodes each with natsevent.DecodeMsg,
// writes the batch with write and acknowledges its last message (AckAll),
// until it has applied n records.
func rawLive(ctx context.Context, js jetstream.JetStream, stream, subjectPrefix, durable string, n, batch int,
	write func(recs []eventstore.Record) error) error {
	c, err := js.CreateConsumer(ctx, stream, liveConsumerConfig(durable, subjectPrefix))
	if err != nil {
		return fmt.Errorf("consumer %s: %w", durable, err)
	}
	it, err := c.Messages(jetstream.PullMaxMessages(2 * batch))
	if err != nil {
		return fmt.Errorf("consume %s: %w", durable, err)
	}
	defer it.Stop()
	msgs := make([]jetstream.Msg, 0, batch)
	recs := make([]eventstore.Record, 0, batch)
	for done := 0; done < n; {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return fmt.Errorf("consume %s: %w", durable, err)
		}
		msgs = append(msgs[:0], m)
		wctx, cancel := context.WithTimeout(ctx, projection.DefaultMaxWait)
		for len(msgs) < batch && done+len(msgs) < n {
			m, err := it.Next(jetstream.NextContext(wctx))
			if err != nil {
				break // the max wait is over
			}
			msgs = append(msgs, m)
		}
		cancel()
		recs = recs[:0]
		for _, m := range msgs {
			rec, err := natsevent.DecodeMsg(m.Subject(), m.Headers(), m.Data())
			if err != nil {
				return err
			}
			recs = append(recs, rec)
		}
		if err := write(recs); err != nil {
			return err
		}
		if err := msgs[len(msgs)-1].Ack(); err != nil {
			return fmt.Errorf("ack: %w", err)
		}
		done += len(msgs)
	}
	return nil
}

// projectLive measures a runner on on applying what its durable JetStream
// consumers deliver, next to on's baseline.
func projectLive(ctx context.Context, e *env, on projectOn) (Result, error) {
	f, err := newProjectFixture(ctx, e, on.schema, on.events)
	if err != nil {
		return Result{}, err
	}
	defer f.store.Close()
	subjectPrefix, stream, err := e.ensureStream(ctx, on.stream)
	if err != nil {
		return Result{}, err
	}
	if err := rawPublish(ctx, e.js, subjectPrefix, f.recs); err != nil {
		return Result{}, err
	}
	var cleanup func() error
	// Every round, either side has its own consumer(s) and key prefix;
	// they are deleted after the round, outside the measured time.
	live := func(round string) func() error {
		return func() error {
			cp := "bench" + round
			names, err := liveConsumers(ctx, e.js, stream, subjectPrefix, cp, on.partitions)
			if err != nil {
				return err
			}
			prefix := e.prefix + "live" + round + ":"
			target, proj := on.runnerOn(f.reg)
			r, err := projection.NewRunnerOn(target, liveOnly{f.store}, []projection.Projection{proj},
				e.runnerOptions(prefix, projection.WithJetStream(e.js, stream), projection.WithConsumerPrefix(cp))...)
			if err != nil {
				return errors.Join(err, deleteConsumers(ctx, e.js, stream, names...))
			}
			stop := startRunner(ctx, r)
			err = waitApplied(ctx, r, f.recs, on.partitions)
			cleanup = func() error {
				return errors.Join(deleteConsumers(ctx, e.js, stream, names...), on.clean(ctx, prefix))
			}
			return errors.Join(err, stop())
		}
	}
	raw := func(round string) func() error {
		ns := projection.Namespace{Prefix: e.prefix + "raw" + round + ":", Projection: projectionName, Version: 1, Partitions: on.partitions}
		durable := "bench-raw" + round
		return func() error {
			cleanup = func() error {
				return errors.Join(deleteConsumers(ctx, e.js, stream, durable), on.clean(ctx, ns.Prefix))
			}
			return rawLive(ctx, e.js, stream, subjectPrefix, durable, len(f.recs), projection.DefaultBatchSize, func(recs []eventstore.Record) error {
				return on.rawBatch(ctx, f.reg, ns, recs)
			})
		}
	}
	side := func(s side, round func() error) (time.Duration, error) {
		cleanup = nil
		d, err := timedSide(e.mem, s, round)
		if cleanup != nil {
			err = errors.Join(err, cleanup())
		}
		return d, err
	}
	warmUp := func(round func() error) error {
		cleanup = nil
		err := round()
		if cleanup != nil {
			err = errors.Join(err, cleanup())
		}
		return err
	}
	if err := warmUp(live("w")); err != nil {
		return Result{}, fmt.Errorf("warm-up: %w", err)
	}
	if err := warmUp(raw("w")); err != nil {
		return Result{}, fmt.Errorf("warm-up: baseline: %w", err)
	}
	rounds := max(2, e.sizes.Rounds/2)
	var te, tb time.Duration
	for i := range rounds {
		d, err := side(sideEskit, live(strconv.Itoa(i)))
		if err != nil {
			return Result{}, err
		}
		db, err := side(sideBase, raw(strconv.Itoa(i)))
		if err != nil {
			return Result{}, err
		}
		te, tb = te+d, tb+db
	}
	n := len(f.recs) * rounds
	params := map[string]any{"events": len(f.recs), "rounds": rounds, "batch": projection.DefaultBatchSize, "partitions": on.partitions,
		"note": "each side consumes the stream from its start with a fresh durable consumer per round; eskit's time includes starting the runner (lease, consumer lookup) each round"}
	for k, v := range on.params {
		params[k] = v
	}
	return result(on.name, "events/s", rate(n, te), rate(n, tb), params), nil
}
