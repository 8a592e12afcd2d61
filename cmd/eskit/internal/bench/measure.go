package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// side is one of the two contenders of a case.
type side int

const (
	sideEskit side = iota
	sideBase
	sideIdle
)

// op is one timed operation: worker is the goroutine's index, i the
// operation's index within the run.
type op func(ctx context.Context, worker, i int) error

// parallel runs operations lo..hi-1 on workers goroutines and returns the
// elapsed time. The first error stops every worker.
func parallel(ctx context.Context, lo, hi, workers int, fn op) (time.Duration, error) {
	if hi <= lo {
		return 0, nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	next.Store(int64(lo))
	var wg sync.WaitGroup
	start := time.Now()
	for w := range min(workers, hi-lo) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < hi && ctx.Err() == nil; i = int(next.Add(1) - 1) {
				if err := fn(ctx, w, i); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	d := time.Since(start)
	if err := context.Cause(ctx); err != nil {
		return d, err
	}
	return d, nil
}

// timing is what alternate measured for one side.
type timing struct {
	total time.Duration
	// lat holds every operation's latency (only when recorded).
	lat []time.Duration
}

// alternate runs n operations of eskit and n of the baseline in rounds that
// alternate between the two, so that both see the same background load on a
// shared machine, and returns the time each side took. With latencies set,
// each operation's latency is recorded too.
func alternate(ctx context.Context, mem *memProbe, n, rounds, workers int, latencies bool, eskit, base op) (e, b timing, err error) {
	rounds = max(1, min(rounds, n))
	var mu sync.Mutex
	timed := func(fn op, t *timing) op {
		if !latencies {
			return fn
		}
		return func(ctx context.Context, w, i int) error {
			start := time.Now()
			err := fn(ctx, w, i)
			d := time.Since(start)
			mu.Lock()
			t.lat = append(t.lat, d)
			mu.Unlock()
			return err
		}
	}
	eo, bo := timed(eskit, &e), timed(base, &b)
	for r := range rounds {
		lo, hi := n*r/rounds, n*(r+1)/rounds
		// Start every other round with the baseline, so neither side is
		// always the one that runs right after the other.
		order := []side{sideEskit, sideBase}
		if r%2 == 1 {
			order = []side{sideBase, sideEskit}
		}
		for _, s := range order {
			fn, t := eo, &e
			if s == sideBase {
				fn, t = bo, &b
			}
			mem.enter(s)
			d, err := parallel(ctx, lo, hi, workers, fn)
			mem.leave()
			if err != nil {
				return e, b, fmt.Errorf("%s: %w", s, err)
			}
			t.total += d
		}
	}
	return e, b, nil
}

func (s side) String() string {
	switch s {
	case sideEskit:
		return "eskit"
	case sideBase:
		return "baseline"
	}
	return "idle"
}

// timedSide runs fn as one side of a case, under the memory probe.
func timedSide(mem *memProbe, s side, fn func() error) (time.Duration, error) {
	mem.enter(s)
	start := time.Now()
	err := fn()
	d := time.Since(start)
	mem.leave()
	if err != nil {
		return d, fmt.Errorf("%s: %w", s, err)
	}
	return d, nil
}

// percentile returns the p-th percentile (0 < p ≤ 100) of sorted latencies.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func sortedCopy(d []time.Duration) []time.Duration {
	out := slices.Clone(d)
	slices.Sort(out)
	return out
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// Memory is the peak memory of each side of a case, in bytes. Heap is the
// peak of the Go heap in use (runtime/metrics heap objects plus unused
// heap spans, i.e. MemStats.HeapInuse), sampled every few milliseconds;
// RSS is the process's peak resident set (VmHWM, reset through
// /proc/self/clear_refs when each side starts), zero where the kernel does
// not offer it. Both are whole-process figures: they include the fixtures
// the case holds in memory for both sides.
type Memory struct {
	HeapEskit uint64 `json:"heap_eskit"`
	HeapBase  uint64 `json:"heap_baseline"`
	RSSEskit  uint64 `json:"rss_eskit,omitempty"`
	RSSBase   uint64 `json:"rss_baseline,omitempty"`
}

// memProbe samples the heap in the background and attributes the peaks to
// the side that is running.
type memProbe struct {
	mu      sync.Mutex
	current side
	heap    [2]uint64
	rss     [2]uint64
	rssOK   bool
	samples []metrics.Sample
	stop    context.CancelFunc
	done    chan struct{}
}

const memSampleInterval = 5 * time.Millisecond

func newMemProbe() *memProbe {
	m := &memProbe{
		current: sideIdle,
		samples: []metrics.Sample{
			{Name: "/memory/classes/heap/objects:bytes"},
			{Name: "/memory/classes/heap/unused:bytes"},
		},
		done: make(chan struct{}),
	}
	m.rssOK = resetPeakRSS() == nil
	ctx, cancel := context.WithCancel(context.Background())
	m.stop = cancel
	go func() {
		defer close(m.done)
		t := time.NewTicker(memSampleInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				m.sample()
			}
		}
	}()
	return m
}

// close stops the sampler.
func (m *memProbe) close() {
	m.stop()
	<-m.done
}

// RSSMeasured reports whether peak RSS can be measured per side.
func (m *memProbe) RSSMeasured() bool { return m.rssOK }

func (m *memProbe) sample() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.current == sideIdle {
		return
	}
	metrics.Read(m.samples)
	var v uint64
	for _, s := range m.samples {
		if s.Value.Kind() == metrics.KindUint64 {
			v += s.Value.Uint64()
		}
	}
	m.heap[m.current] = max(m.heap[m.current], v)
}

// reset forgets the peaks of the previous case.
func (m *memProbe) reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.heap, m.rss = [2]uint64{}, [2]uint64{}
}

// enter attributes what follows to s.
func (m *memProbe) enter(s side) {
	if m.rssOK {
		// Return what earlier work (the fixture, the other side) freed to
		// the OS first: otherwise the reset keeps it in the current RSS and
		// charges it to this side.
		debug.FreeOSMemory()
		_ = resetPeakRSS()
	}
	m.mu.Lock()
	m.current = s
	m.mu.Unlock()
	m.sample()
}

// leave ends the current side's stretch.
func (m *memProbe) leave() {
	m.sample()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.rssOK && m.current != sideIdle {
		if v, err := peakRSS(); err == nil {
			m.rss[m.current] = max(m.rss[m.current], v)
		}
	}
	m.current = sideIdle
}

// peaks returns the peaks since the last reset.
func (m *memProbe) peaks() Memory {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Memory{HeapEskit: m.heap[sideEskit], HeapBase: m.heap[sideBase], RSSEskit: m.rss[sideEskit], RSSBase: m.rss[sideBase]}
}

// resetPeakRSS resets the kernel's peak RSS of this process (VmHWM) to its
// current RSS.
func resetPeakRSS() error {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

// peakRSS returns VmHWM in bytes.
func peakRSS() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("VmHWM:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) == 0 {
			break
		}
		kb, err := strconv.ParseUint(string(f[0]), 10, 64)
		if err != nil {
			return 0, err
		}
		return kb * 1024, nil
	}
	return 0, errors.New("no VmHWM in /proc/self/status")
}

// warmPool opens up to n of the pool's connections at once and returns
// them to it idle, so that a latency measurement at that concurrency does
// not include connection set-up (a burst of new PostgreSQL backends takes
// hundreds of milliseconds on two cores).
func warmPool(ctx context.Context, pool *pgxpool.Pool, n int) error {
	n = min(n, int(pool.Config().MaxConns))
	conns := make([]*pgxpool.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			c, err := pool.Acquire(ctx)
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return fmt.Errorf("warm up the connection pool: %w", err)
	}
	return nil
}
