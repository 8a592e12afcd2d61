package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/outbox"
	"github.com/eskit/eskit/projection"
)

// e2eClock pairs each stream's append commit time with the time its read
// model update committed.
type e2eClock struct {
	mu        sync.Mutex
	committed map[string]time.Time
	applied   map[string]time.Time
	latencies []time.Duration
	notify    chan struct{}
}

func newE2EClock() *e2eClock {
	return &e2eClock{committed: map[string]time.Time{}, applied: map[string]time.Time{}, notify: make(chan struct{}, 1)}
}

// mark records one side's time for stream and, once both are known, the
// latency.
func (c *e2eClock) mark(stream string, at time.Time, appended bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	mine, other := c.applied, c.committed
	if appended {
		mine, other = c.committed, c.applied
	}
	t, ok := other[stream]
	if !ok {
		mine[stream] = at
		return
	}
	delete(other, stream)
	if appended {
		c.latencies = append(c.latencies, max(0, t.Sub(at)))
	} else {
		c.latencies = append(c.latencies, max(0, at.Sub(t)))
	}
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// reset forgets everything recorded.
func (c *e2eClock) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.latencies = nil
	c.committed, c.applied = map[string]time.Time{}, map[string]time.Time{}
}

func (c *e2eClock) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.latencies)
}

// waitCount waits until n latencies are known.
func (c *e2eClock) waitCount(ctx context.Context, n int, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for c.count() < n {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("%d of %d appends reached the read model within %v", c.count(), n, timeout)
		case <-c.notify:
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// runE2E appends through the repository at a steady rate, each command on
// a new stream, with the whole pipeline running (relay to JetStream, a
// projection runner following its durable consumer into Redis), and
// measures the time from each append's commit (Handle returning) to the
// commit of the read model batch that holds it. The same percentile of the
// time until a subscriber of the store's feed sees the event is reported as
// feed_ms: the part of the latency before the relay.
func runE2E(ctx context.Context, e *env) ([]Result, error) {
	f, err := newAppendFixture(ctx, e, "bench_e2e")
	if err != nil {
		return nil, err
	}
	defer f.close()
	subjectPrefix, stream, err := e.ensureStream(ctx, "e2e")
	if err != nil {
		return nil, err
	}
	relay, err := outbox.NewRelay(f.store, e.pool, e.js, outbox.WithSchema(f.schema), outbox.WithPrefix(subjectPrefix),
		outbox.WithName("bench-e2e"), outbox.WithLogger(e.quiet))
	if err != nil {
		return nil, err
	}
	rctx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay.Run(rctx) }()
	defer func() { stopRelay(); <-relayDone }()

	clock, feedClock := newE2EClock(), newE2EClock()
	// A subscriber of the store's feed tells how much of the latency is
	// the feed's (commit to visible past the feed's safe point).
	sctx, stopSub := context.WithCancel(ctx)
	defer stopSub()
	go func() {
		for rec, err := range f.store.Subscribe(sctx, eventstore.Position{}) {
			if err != nil {
				return
			}
			feedClock.mark(rec.StreamID, time.Now(), false)
		}
	}()
	proj := balances(f.reg, func(rec eventstore.Record) { clock.mark(rec.StreamID, time.Now(), false) }, 1)
	runner, err := projection.NewRunner(e.rdb, f.store, []projection.Projection{proj},
		e.runnerOptions(e.prefix+"e2e:", projection.WithJetStream(e.js, stream), projection.WithFilterSubject(subjectPrefix+".>"))...)
	if err != nil {
		return nil, err
	}
	stopRunner := startRunner(ctx, runner)
	defer func() { _ = stopRunner() }()
	if err := waitActive(ctx, runner, projectionName, 1); err != nil {
		return nil, err
	}

	appendOne := func(ctx context.Context, streamID string) error {
		if _, err := f.repo.Handle(ctx, streamID, deposit{Amount: 1}); err != nil {
			return err
		}
		now := time.Now()
		clock.mark(streamID, now, true)
		feedClock.mark(streamID, now, true)
		return nil
	}
	// Warm up until appends reach the read model as live updates (the
	// first ones may be applied as the projection's first build, a replay,
	// which runs no after-commit hooks).
	warm := false
	for i := 0; !warm && i < 100; i++ {
		if err := appendOne(ctx, "warm-"+strconv.Itoa(i)); err != nil {
			return nil, err
		}
		warm = clock.waitCount(ctx, 1, 300*time.Millisecond) == nil
	}
	if !warm {
		return nil, errors.New("warm-up: appends do not reach the read model")
	}
	const workers = 64
	if err := warmPool(ctx, e.pool, workers); err != nil {
		return nil, err
	}
	time.Sleep(100 * time.Millisecond)
	clock.reset()
	feedClock.reset()

	total := int(float64(e.sizes.E2ERate) * e.sizes.E2EDuration.Seconds())
	total = max(total, 1)
	interval := time.Second / time.Duration(e.sizes.E2ERate)
	work := make(chan int, total)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range workers {
		wg.Go(func() {
			for i := range work {
				if err := appendOne(wctx, "e2e-"+strconv.Itoa(i)); err != nil {
					select {
					case errs <- err:
					default:
					}
					cancel()
					return
				}
			}
		})
	}
	e.mem.enter(sideEskit)
	start := time.Now()
	for i := range total {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			select {
			case <-wctx.Done():
			case <-time.After(d):
			}
		}
		if wctx.Err() != nil {
			break
		}
		work <- i
	}
	close(work)
	wg.Wait()
	sent := time.Since(start)
	select {
	case err := <-errs:
		e.mem.leave()
		return nil, err
	default:
	}
	err = clock.waitCount(ctx, total, 30*time.Second)
	e.mem.leave()
	if err != nil {
		return nil, err
	}
	_ = feedClock.waitCount(ctx, total, 5*time.Second)
	lat := sortedCopy(clock.latencies)
	feedClock.mu.Lock()
	feedLat := sortedCopy(feedClock.latencies)
	feedClock.mu.Unlock()
	params := func(p string) map[string]any {
		pct, _ := strconv.ParseFloat(p[1:], 64)
		return map[string]any{"variant": p, "appends": total, "target_rate": e.sizes.E2ERate,
			"achieved_rate": rate(total, sent), "max_ms": ms(lat[len(lat)-1]),
			"feed_ms": ms(percentile(feedLat, pct))}
	}
	out := []Result{
		result("e2e-latency", "ms", ms(percentile(lat, 50)), 0, params("p50")),
		result("e2e-latency", "ms", ms(percentile(lat, 95)), 0, params("p95")),
		result("e2e-latency", "ms", ms(percentile(lat, 99)), 0, params("p99")).withTarget(target{min: false, bound: 20}),
	}
	return out, nil
}
