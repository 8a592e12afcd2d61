package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/projection"
)

// projectFixture is a store holding the events the projections apply.
type projectFixture struct {
	store *pgstore.Store
	reg   *eventstore.Registry
	recs  []eventstore.Record
	head  eventstore.Position
}

func newProjectFixture(ctx context.Context, e *env, schema string) (*projectFixture, error) {
	store, err := e.newStore(ctx, schema, pgstore.WithNotify(false))
	if err != nil {
		return nil, err
	}
	f := &projectFixture{store: store}
	if f.reg, err = newRegistry(); err != nil {
		store.Close()
		return nil, err
	}
	total := e.sizes.Project
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

// waitActive waits until r holds the projection's lease.
func waitActive(ctx context.Context, r *projection.Runner, name string) error {
	deadline := time.Now().Add(30 * time.Second)
	for !r.Active(name) {
		if time.Now().After(deadline) {
			return fmt.Errorf("runner did not become active for %s", name)
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

// runProjectRebuild measures Runner.Rebuild (a new namespace built from
// the store's feed, then switched to) next to raw Redis TxPipelined batches
// of the same writes plus a checkpoint.
func runProjectRebuild(ctx context.Context, e *env) ([]Result, error) {
	f, err := newProjectFixture(ctx, e, "bench_rebuild")
	if err != nil {
		return nil, err
	}
	defer f.store.Close()
	prefix := e.prefix + "rebuild:"
	r, err := projection.NewRunner(e.rdb, f.store, []projection.Projection{balances(f.reg, nil)}, e.runnerOptions(prefix)...)
	if err != nil {
		return nil, err
	}
	stop := startRunner(ctx, r)
	defer func() { _ = stop() }()
	if err := waitActive(ctx, r, projectionName); err != nil {
		return nil, err
	}
	// The first build doubles as the warm-up.
	if err := waitFor(ctx, r, f.head); err != nil {
		return nil, err
	}
	raw := func(round int) func() error {
		ns := projection.Namespace{Prefix: e.prefix + "raw:", Projection: projectionName, Version: int64(round + 1)}
		return func() error { return rawProject(ctx, e.rdb, f.reg, ns, f.recs, projection.DefaultBatchSize) }
	}
	if err := raw(0)(); err != nil {
		return nil, fmt.Errorf("warm-up: baseline: %w", err)
	}
	rounds := max(2, e.sizes.Rounds/2)
	var te, tb time.Duration
	for i := range rounds {
		d, err := timedSide(e.mem, sideEskit, func() error { return r.Rebuild(ctx, projectionName) })
		if err != nil {
			return nil, err
		}
		db, err := timedSide(e.mem, sideBase, raw(i+1))
		if err != nil {
			return nil, err
		}
		te, tb = te+d, tb+db
		if err := deletePrefix(ctx, e.rdb, e.prefix+"raw:"); err != nil {
			return nil, err
		}
	}
	n := len(f.recs) * rounds
	params := map[string]any{"events": len(f.recs), "rounds": rounds, "batch": projection.DefaultBatchSize}
	res := result("project-rebuild", "events/s", rate(n, te), rate(n, tb), params)
	return []Result{res.withTarget(target{min: true, bound: 100_000})}, nil
}

// liveOnly is a feed without history, so that a runner gets every record
// from JetStream.
type liveOnly struct{ projection.Source }

func (liveOnly) ReadAll(context.Context, eventstore.Position, int) ([]eventstore.Record, error) {
	return nil, nil
}

// runProjectLive measures a runner applying records delivered by its
// durable JetStream consumer, next to raw Redis TxPipelined batches of the
// same writes plus a checkpoint. Every round starts a fresh runner with a
// fresh consumer (delivering the whole stream) and key prefix.
func runProjectLive(ctx context.Context, e *env) ([]Result, error) {
	f, err := newProjectFixture(ctx, e, "bench_live")
	if err != nil {
		return nil, err
	}
	defer f.store.Close()
	subjectPrefix, stream, err := e.ensureStream(ctx, "live")
	if err != nil {
		return nil, err
	}
	if err := rawPublish(ctx, e.js, subjectPrefix, f.recs); err != nil {
		return nil, err
	}
	live := func(round int) func() error {
		return func() error {
			cp := "bench" + strconv.Itoa(round)
			if _, err := e.js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
				Durable: projection.ConsumerName(cp, projectionName), DeliverPolicy: jetstream.DeliverAllPolicy,
				AckPolicy: jetstream.AckAllPolicy, MaxAckPending: 4 * projection.DefaultBatchSize,
				FilterSubject: subjectPrefix + ".>",
			}); err != nil {
				return err
			}
			prefix := e.prefix + "live" + strconv.Itoa(round) + ":"
			r, err := projection.NewRunner(e.rdb, liveOnly{f.store}, []projection.Projection{balances(f.reg, nil)},
				e.runnerOptions(prefix, projection.WithJetStream(e.js, stream), projection.WithConsumerPrefix(cp))...)
			if err != nil {
				return err
			}
			stop := startRunner(ctx, r)
			err = waitFor(ctx, r, f.head)
			return errors.Join(err, stop())
		}
	}
	raw := func(round int) func() error {
		ns := projection.Namespace{Prefix: e.prefix + "raw:", Projection: projectionName, Version: int64(round + 1)}
		return func() error { return rawProject(ctx, e.rdb, f.reg, ns, f.recs, projection.DefaultBatchSize) }
	}
	if err := raw(0)(); err != nil {
		return nil, fmt.Errorf("warm-up: baseline: %w", err)
	}
	if err := deletePrefix(ctx, e.rdb, e.prefix+"raw:"); err != nil {
		return nil, err
	}
	rounds := max(2, e.sizes.Rounds/2)
	var te, tb time.Duration
	for i := range rounds {
		d, err := timedSide(e.mem, sideEskit, live(i))
		if err != nil {
			return nil, err
		}
		db, err := timedSide(e.mem, sideBase, raw(i))
		if err != nil {
			return nil, err
		}
		te, tb = te+d, tb+db
		if err := deletePrefix(ctx, e.rdb, e.prefix+"raw:"); err != nil {
			return nil, err
		}
		if err := deletePrefix(ctx, e.rdb, e.prefix+"live"+strconv.Itoa(i)+":"); err != nil {
			return nil, err
		}
	}
	n := len(f.recs) * rounds
	params := map[string]any{"events": len(f.recs), "rounds": rounds, "batch": projection.DefaultBatchSize,
		"note": "eskit's time includes starting the runner (lease, consumer) each round"}
	return []Result{result("project-live", "events/s", rate(n, te), rate(n, tb), params)}, nil
}
