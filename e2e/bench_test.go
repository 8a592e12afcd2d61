package e2e

import (
	"context"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/internal/infra/natstest"
	"github.com/eskit/eskit/natsevent"
	"github.com/eskit/eskit/outbox"
	"github.com/eskit/eskit/projection"
)

// Benchmark load: a steady rate of one-event appends to distinct streams.
const (
	benchRate     = 1000 // appends per second
	benchDuration = 3 * time.Second
	benchWorkers  = 32 // concurrent appenders (a commit takes about 1ms)
)

// timeline records when each event passed each stage.
type timeline struct {
	mu     sync.Mutex
	stages [numStages]map[uuid.UUID]time.Time
}

const (
	stageAppended  = iota // Append returned
	stagePublished        // the relay's message reached NATS subscribers
	stageApplied          // the projection applied it (in a batch not yet committed)
	stageCommitted        // its batch committed: the checkpoint passed its Position
	numStages
)

var stageNames = [numStages]string{"append", "publish", "apply", "commit"}

func newTimeline(n int) *timeline {
	t := &timeline{}
	for i := range t.stages {
		t.stages[i] = make(map[uuid.UUID]time.Time, n)
	}
	return t
}

func (t *timeline) mark(stage int, id uuid.UUID) {
	now := time.Now()
	t.mu.Lock()
	if _, ok := t.stages[stage][id]; !ok {
		t.stages[stage][id] = now
	}
	t.mu.Unlock()
}

func (t *timeline) count(stage int) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.stages[stage])
}

// durations returns, per event appended, the time from stage from to stage
// to, sorted.
func (t *timeline) durations(from, to int) []time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	ds := make([]time.Duration, 0, len(t.stages[stageAppended]))
	for id := range t.stages[stageAppended] {
		a, ok1 := t.stages[from][id]
		b, ok2 := t.stages[to][id]
		if ok1 && ok2 {
			ds = append(ds, b.Sub(a))
		}
	}
	slices.Sort(ds)
	return ds
}

func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return ds[min(len(ds)-1, int(q*float64(len(ds))))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkE2ELatency measures, at a steady 1,000 appends/s to distinct
// streams, the time from an append's return to the commit of the
// projection batch that applies it (when the projection's checkpoint
// passes its Position and the read model shows it): store → relay →
// JetStream → durable consumer → Redis MULTI/EXEC. It reports the p50, p95
// and p99 of that latency (e2e-*), and of its stages: append return →
// message on NATS (publish-*), → applied in a batch (fetch-*), → batch
// committed (commit-*).
func BenchmarkE2ELatency(b *testing.B) {
	e := newEnv(b, false)
	b.Logf("NATS at %s (external: %v)", e.url, os.Getenv(natstest.EnvURL) != "")
	n := int(benchRate * benchDuration / time.Second)
	var cur atomic.Pointer[timeline]
	cur.Store(newTimeline(n))
	l := newLedger()
	l.applied = func(id uuid.UUID) { cur.Load().mark(stageApplied, id) }
	l.committed = func(id uuid.UUID) { cur.Load().mark(stageCommitted, id) }

	// An observer of the published messages, on its own connection.
	nc := natstest.Connect(b, e.url)
	_, err := nc.Subscribe(e.subj+".>", func(m *nats.Msg) {
		if id, err := uuid.Parse(m.Header.Get(natsevent.HeaderMsgID)); err == nil {
			cur.Load().mark(stagePublished, id)
		}
	})
	require.NoError(b, err)
	require.NoError(b, nc.Flush())

	e.startRelay(outbox.WithBatchSize(outbox.DefaultBatchSize))
	run := e.startRunner(l, projection.WithBatchSize(projection.DefaultBatchSize))
	require.Eventually(b, func() bool { return run.runner.Active(ledgerPN) }, waitLimit, time.Millisecond)
	ctx := context.Background()

	// Warm up the whole path (connections, consumer, scripts).
	for warm := 0; warm < 50 || cur.Load().count(stageCommitted) < 20; warm++ {
		ev := newEvent(1)
		res, err := e.store.Append(ctx, "acct-warmup", eventstore.Any, ev)
		require.NoError(b, err)
		wctx, cancel := context.WithTimeout(ctx, waitLimit)
		require.NoError(b, run.runner.WaitFor(wctx, ledgerPN, res.Position))
		cancel()
	}

	// Open the appenders' connections before measuring: a burst of new
	// PostgreSQL backends takes hundreds of milliseconds on two cores.
	conns := make([]*pgxpool.Conn, benchWorkers)
	for i := range conns {
		conns[i], err = e.pool.Acquire(ctx)
		require.NoError(b, err)
	}
	for _, c := range conns {
		c.Release()
	}

	b.ResetTimer()
	for range b.N {
		tl := newTimeline(n)
		cur.Store(tl)
		jobs := make(chan int, benchWorkers)
		var wg sync.WaitGroup
		for range benchWorkers {
			wg.Go(func() {
				for i := range jobs {
					ev := newEvent(int64(i%100 + 1))
					if _, err := e.store.Append(ctx, "acct-bench-"+uuid.NewString(), eventstore.NoStream, ev); err != nil {
						b.Errorf("append: %v", err)
						return
					}
					tl.mark(stageAppended, ev.ID)
				}
			})
		}
		// Paced by the clock, not a ticker: a late tick is made up at once
		// instead of dropped, so the rate holds.
		start := time.Now()
		for i := range n {
			if d := time.Until(start.Add(time.Duration(i) * time.Second / benchRate)); d > 0 {
				time.Sleep(d)
			}
			jobs <- i
		}
		close(jobs)
		wg.Wait()
		elapsed := time.Since(start)
		require.Eventually(b, func() bool { return tl.count(stageCommitted) >= tl.count(stageAppended) },
			waitLimit, time.Millisecond, "every append reaches the read model")
		b.StopTimer()

		e2e := tl.durations(stageAppended, stageCommitted)
		require.Len(b, e2e, n)
		b.ReportMetric(float64(n)/elapsed.Seconds(), "appends/s")
		b.ReportMetric(ms(quantile(e2e, 0.50)), "p50-ms")
		b.ReportMetric(ms(quantile(e2e, 0.95)), "p95-ms")
		b.ReportMetric(ms(quantile(e2e, 0.99)), "p99-ms")
		b.ReportMetric(ms(e2e[len(e2e)-1]), "max-ms")
		for s := stageAppended; s < stageCommitted; s++ {
			ds := tl.durations(s, s+1)
			b.Logf("%-7s → %-7s p50 %6.2fms  p95 %6.2fms  p99 %6.2fms  max %6.2fms (%d events)",
				stageNames[s], stageNames[s+1], ms(quantile(ds, 0.5)), ms(quantile(ds, 0.95)),
				ms(quantile(ds, 0.99)), ms(ds[len(ds)-1]), len(ds))
		}
		b.StartTimer()
	}
}
