package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

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
	store, err := e.newStore(ctx, schema, pgstore.WithNotify(false))
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
	// raw writes what the projection writes for recs into ns, as a
	// hand-written projector would.
	raw func(ctx context.Context, reg *eventstore.Registry, ns projection.Namespace, recs []eventstore.Record) error
	// clean deletes every key that starts with prefix.
	clean func(ctx context.Context, prefix string) error
	// params are added to the result's.
	params map[string]any
}

// standalone is the single Redis server of the run, with a projection of
// one partition and TxPipelined batches as the baseline.
func (e *env) standalone(name, schema, stream string) projectOn {
	return projectOn{name: name, schema: schema, stream: stream, events: e.sizes.Project, rdb: e.rdb, partitions: 1,
		raw: func(ctx context.Context, reg *eventstore.Registry, ns projection.Namespace, recs []eventstore.Record) error {
			return rawProject(ctx, e.rdb, reg, ns, recs, projection.DefaultBatchSize)
		},
		clean: func(ctx context.Context, prefix string) error { return deletePrefix(ctx, e.rdb, prefix) },
	}
}

// runProjectRebuild measures Runner.Rebuild (a new namespace built from
// the store's feed, then switched to) next to raw Redis TxPipelined batches
// of the same writes plus a checkpoint.
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
	raw := func(round int) func() error {
		ns := projection.Namespace{Prefix: e.prefix + "raw:", Projection: projectionName, Version: int64(round + 1), Partitions: on.partitions}
		return func() error { return on.raw(ctx, f.reg, ns, f.recs) }
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
// durable JetStream consumer, next to raw Redis TxPipelined batches of the
// same writes plus a checkpoint. Every round starts a fresh runner with a
// fresh consumer (delivering the whole stream) and key prefix.
func runProjectLive(ctx context.Context, e *env) ([]Result, error) {
	res, err := projectLive(ctx, e, e.standalone("project-live", "bench_live", "live"))
	if err != nil {
		return nil, err
	}
	return []Result{res}, nil
}

// liveConsumers creates, for a runner with consumer prefix cp, the durable
// consumers of every partition of the projection, delivering the whole
// stream from its start (a runner creates missing ones delivering new
// messages only). They filter as the runner's own would: each partition's
// buckets where the server takes several filters, else the relay's whole
// subject space.
func liveConsumers(ctx context.Context, js jetstream.JetStream, stream, subjectPrefix, cp string, partitions int) error {
	multi := partitions > 1 && natsevent.CheckJetStream(ctx, js, natsevent.FeatureMultiFilter) == nil
	for p := range partitions {
		cfg := jetstream.ConsumerConfig{
			Durable: projection.ConsumerName(cp, projectionName), DeliverPolicy: jetstream.DeliverAllPolicy,
			AckPolicy: jetstream.AckAllPolicy, MaxAckPending: max(4*projection.DefaultBatchSize, 10_000),
			FilterSubject: subjectPrefix + ".>",
		}
		if partitions > 1 {
			cfg.Durable += "_p" + strconv.Itoa(p) + "of" + strconv.Itoa(partitions)
		}
		if multi {
			filters, err := natsevent.PartitionFilters(subjectPrefix, p, partitions)
			if err != nil {
				return err
			}
			cfg.FilterSubject, cfg.FilterSubjects = "", filters
		}
		if _, err := js.CreateConsumer(ctx, stream, cfg); err != nil {
			return fmt.Errorf("consumer %s: %w", cfg.Durable, err)
		}
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
	live := func(round int) func() error {
		return func() error {
			cp := "bench" + strconv.Itoa(round)
			if err := liveConsumers(ctx, e.js, stream, subjectPrefix, cp, on.partitions); err != nil {
				return err
			}
			prefix := e.prefix + "live" + strconv.Itoa(round) + ":"
			r, err := projection.NewRunner(on.rdb, liveOnly{f.store}, []projection.Projection{balances(f.reg, nil, on.partitions)},
				e.runnerOptions(prefix, projection.WithJetStream(e.js, stream), projection.WithConsumerPrefix(cp))...)
			if err != nil {
				return err
			}
			stop := startRunner(ctx, r)
			err = waitApplied(ctx, r, f.recs, on.partitions)
			return errors.Join(err, stop())
		}
	}
	raw := func(round int) func() error {
		ns := projection.Namespace{Prefix: e.prefix + "raw:", Projection: projectionName, Version: int64(round + 1), Partitions: on.partitions}
		return func() error { return on.raw(ctx, f.reg, ns, f.recs) }
	}
	if err := raw(0)(); err != nil {
		return Result{}, fmt.Errorf("warm-up: baseline: %w", err)
	}
	if err := on.clean(ctx, e.prefix+"raw:"); err != nil {
		return Result{}, err
	}
	rounds := max(2, e.sizes.Rounds/2)
	var te, tb time.Duration
	for i := range rounds {
		d, err := timedSide(e.mem, sideEskit, live(i))
		if err != nil {
			return Result{}, err
		}
		db, err := timedSide(e.mem, sideBase, raw(i))
		if err != nil {
			return Result{}, err
		}
		te, tb = te+d, tb+db
		if err := on.clean(ctx, e.prefix+"raw:"); err != nil {
			return Result{}, err
		}
		if err := on.clean(ctx, e.prefix+"live"+strconv.Itoa(i)+":"); err != nil {
			return Result{}, err
		}
	}
	n := len(f.recs) * rounds
	params := map[string]any{"events": len(f.recs), "rounds": rounds, "batch": projection.DefaultBatchSize, "partitions": on.partitions,
		"note": "eskit's time includes starting the runner (leases, consumers) each round"}
	for k, v := range on.params {
		params[k] = v
	}
	return result(on.name, "events/s", rate(n, te), rate(n, tb), params), nil
}
