package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/internal/infra/localproc"
	"github.com/eskit/eskit/internal/infra/redisconn"
	"github.com/eskit/eskit/projection"
)

// project-partitioned: a projection of partitionedPartitions partitions
// whose apply waits PartitionedApply per record (a call to a slow service),
// caught up from the store's feed by one runner process and by
// PartitionedRunners runner processes. Each runner process can have
// PartitionedConcurrency calls of the slow service in flight (its client's
// connection pool) and runs with projection.WithConcurrency of the same
// value, so a process's throughput is bounded whatever the number of
// partitions it holds, and more processes can only be faster by sharing
// the partitions: the case measures the scale-out, not the concurrency
// within one process.

// partitionedPartitions is the number of partitions of project-partitioned.
const partitionedPartitions = 6

// RunnerEnv is the environment variable that makes a process started by
// project-partitioned a runner process (see RunChildIfRequested). Its value
// is the runner's configuration, as JSON.
const RunnerEnv = "ESKIT_BENCH_RUNNER"

// RunChildIfRequested turns the process into a runner process of
// project-partitioned and exits when RunnerEnv is set; otherwise it returns
// at once. The bench starts its runner processes by re-executing its own
// binary (os.Executable) with RunnerEnv set, so every binary that runs the
// bench must call it before doing anything else: cmd/eskit calls it from
// an init function, the package's tests from TestMain.
//
// A runner process prints "ready" on stdout once connected, starts its
// runner when it reads "go" on stdin, stops it when stdin closes (or on
// SIGTERM), prints "stats <JSON>" and exits.
func RunChildIfRequested() {
	spec, ok := os.LookupEnv(RunnerEnv)
	if !ok {
		return
	}
	os.Exit(runChild(spec, os.Stdin, os.Stdout, os.Stderr))
}

// runnerSpec configures a runner process.
type runnerSpec struct {
	PostgresURL string        `json:"postgres_url"`
	Schema      string        `json:"schema"`
	RedisURL    string        `json:"redis_url"`
	Prefix      string        `json:"prefix"`
	Partitions  int           `json:"partitions"`
	Concurrency int           `json:"concurrency"`
	Apply       time.Duration `json:"apply"`
	Owner       string        `json:"owner"`
}

// runnerStats is what a runner process reports when it stops.
type runnerStats struct {
	// Applied counts the calls of the slow service (applies, including
	// those of batches that were not committed because the partition was
	// handed over).
	Applied int64 `json:"applied"`
	// Waited is the total time the calls took, their waits for a free
	// connection excluded.
	Waited time.Duration `json:"waited"`
	// PeakApplying is the most applies in progress at once (waiting for a
	// connection of the slow service included): how many partitions the
	// runner applied at the same time.
	PeakApplying int64 `json:"peak_applying"`
	// Held lists the changes of the partitions the runner held, from the
	// start signal on.
	Held []heldChange `json:"held"`
	// Memory is the process's peak memory while it ran.
	Memory Memory `json:"memory"`
	// Log is the end of what the process logged (warnings and errors),
	// filled in by the bench.
	Log string `json:"-"`
}

type heldChange struct {
	At    time.Duration `json:"at"`
	Parts []int         `json:"parts"`
}

// slowService models a service that answers each call after a fixed time
// and serves a limited number of calls of one process at once (its
// client's connection pool).
type slowService struct {
	conns    chan struct{}
	cost     time.Duration
	applying atomic.Int64
	peak     atomic.Int64
	calls    atomic.Int64
	waited   atomic.Int64
}

func newSlowService(conns int, cost time.Duration) *slowService {
	return &slowService{conns: make(chan struct{}, max(conns, 1)), cost: cost}
}

// call waits for a free connection, then for the answer: a runtime timer
// of the cost (like time.Sleep, but it gives up when ctx ends, as a real
// client would).
func (s *slowService) call(ctx context.Context) error {
	n := s.applying.Add(1)
	defer s.applying.Add(-1)
	for p := s.peak.Load(); n > p && !s.peak.CompareAndSwap(p, n); p = s.peak.Load() {
	}
	select {
	case s.conns <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.conns }()
	start := time.Now()
	t := time.NewTimer(s.cost)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.calls.Add(1)
	s.waited.Add(int64(time.Since(start)))
	return nil
}

// partitioned returns the projection of project-partitioned: the balances
// projection with a call of svc before each record's writes.
func partitioned(reg *eventstore.Registry, svc *slowService, partitions int) projection.Projection {
	return projection.New(projectionName, projection.Typed(reg,
		func(ctx context.Context, b *projection.Batch, rec eventstore.Record, ev deposited) error {
			if err := svc.call(ctx); err != nil {
				return err
			}
			applyBalance(ctx, b.Pipe(), b.Key, rec.StreamID, ev)
			return nil
		}), projection.Partitions(partitions))
}

// runChild is a runner process; it returns the exit code.
func runChild(specJSON string, stdin io.Reader, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintf(stderr, "bench runner: %v\n", err)
		return 1
	}
	var spec runnerSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		return fail(fmt.Errorf("%s: %w", RunnerEnv, err))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	pcfg, err := pgxpool.ParseConfig(spec.PostgresURL)
	if err != nil {
		return fail(err)
	}
	pcfg.MaxConns = int32(max(4, spec.Partitions+2))
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return fail(err)
	}
	defer pool.Close()
	if err := pool.Ping(ctx); err != nil {
		return fail(fmt.Errorf("PostgreSQL: %w", err))
	}
	store, err := pgstore.New(ctx, pool, pgstore.WithSchema(spec.Schema))
	if err != nil {
		return fail(err)
	}
	defer store.Close()
	rdb, err := redisconn.Open(ctx, spec.RedisURL, redisconn.WithPing())
	if err != nil {
		return fail(err)
	}
	defer rdb.Close()
	reg, err := newRegistry()
	if err != nil {
		return fail(err)
	}
	svc := newSlowService(spec.Concurrency, spec.Apply)
	r, err := projection.NewRunner(rdb, store, []projection.Projection{partitioned(reg, svc, spec.Partitions)},
		projection.WithPrefix(spec.Prefix), projection.WithLogger(log),
		projection.WithConcurrency(spec.Concurrency), projection.WithOwner(spec.Owner))
	if err != nil {
		return fail(err)
	}
	mem := newMemProbe()
	defer mem.close()

	fmt.Fprintln(stdout, "ready")
	in := bufio.NewReader(stdin)
	if line, _ := in.ReadString('\n'); strings.TrimSpace(line) != "go" {
		return 0 // the bench went away before the start
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopping := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, in) // stdin closed: stop
		close(stopping)
	}()
	mem.enter(sideEskit)
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	var held []heldChange
	var last []int
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	sample := func() {
		if h := r.Held(projectionName); !slices.Equal(h, last) {
			held = append(held, heldChange{At: time.Since(start), Parts: h})
			last = h
		}
	}
	// The lease changes are recorded until the stop: what the runner
	// hands over while it stops does not count.
	for running := true; running; {
		select {
		case err = <-done:
			running = false
		case <-stopping:
			sample()
			stopping = nil
			cancel()
		case <-tick.C:
			if stopping != nil {
				sample()
			}
		}
	}
	mem.leave()
	m := mem.peaks()
	stats := runnerStats{Applied: svc.calls.Load(), Waited: time.Duration(svc.waited.Load()),
		PeakApplying: svc.peak.Load(), Held: held, Memory: Memory{HeapEskit: m.HeapEskit, RSSEskit: m.RSSEskit}}
	b, jerr := json.Marshal(stats)
	if jerr != nil {
		return fail(jerr)
	}
	fmt.Fprintf(stdout, "stats %s\n", b)
	if err != nil {
		return fail(err)
	}
	return 0
}

// runnerProc is a runner process seen from the bench.
type runnerProc struct {
	*localproc.Process
	stdin  *os.File
	lines  chan string // stdout lines; closed at EOF
	stderr *localproc.TailBuffer
}

// startRunnerProc starts a runner process with spec.
func startRunnerProc(spec runnerSpec) (_ *runnerProc, err error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("bench: runner process: %w", err)
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		_, _ = inR.Close(), inW.Close()
		return nil, err
	}
	defer func() {
		// The child has its own copies of its ends.
		_, _ = inR.Close(), outW.Close()
		if err != nil {
			_, _ = inW.Close(), outR.Close()
		}
	}()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), RunnerEnv+"="+string(b))
	cmd.Stdin, cmd.Stdout = inR, outW
	p := &runnerProc{stdin: inW, lines: make(chan string, 16), stderr: localproc.NewTailBuffer(16 << 10)}
	cmd.Stderr = p.stderr
	if p.Process, err = startChild("runner process "+spec.Owner, cmd); err != nil {
		return nil, err
	}
	go func() {
		defer close(p.lines)
		defer outR.Close()
		sc := bufio.NewScanner(outR)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	return p, nil
}

// line returns the process's next stdout line.
func (p *runnerProc) line(ctx context.Context, timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case l, ok := <-p.lines:
		if !ok {
			<-p.Done()
			return "", fmt.Errorf("bench: %s exited (%v): %s", p.Name(), p.Err(), strings.TrimSpace(p.stderr.String()))
		}
		return l, nil
	case <-t.C:
		return "", fmt.Errorf("bench: %s said nothing for %v (is RunChildIfRequested called first thing in the binary?): %s",
			p.Name(), timeout, strings.TrimSpace(p.stderr.String()))
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// finish closes the process's stdin, which stops its runner, and returns
// the statistics it prints before it exits; it kills the process when it
// does not exit in time.
func (p *runnerProc) finish(ctx context.Context) (runnerStats, error) {
	_ = p.stdin.Close()
	var st runnerStats
	var err error
	for {
		l, lerr := p.line(ctx, 30*time.Second)
		if lerr != nil {
			err = lerr
			break
		}
		if js, ok := strings.CutPrefix(l, "stats "); ok {
			err = json.Unmarshal([]byte(js), &st)
			break
		}
	}
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
	}
	if kerr := killChild(p.Process); kerr != nil {
		err = errors.Join(err, kerr)
	}
	if err == nil && p.Err() != nil {
		err = fmt.Errorf("bench: %s: %w: %s", p.Name(), p.Err(), strings.TrimSpace(p.stderr.String()))
	}
	return st, err
}

// partitionedRun is what one round of project-partitioned catches up.
type partitionedRun struct {
	store  *pgstore.Store
	schema string
	// burst, when set, is imported once the runners hold their shares of
	// the partitions, and the time runs from then; otherwise the store
	// already holds the events up to head and the time runs from the start
	// signal.
	burst []eventstore.StreamAppend
	head  eventstore.Position
}

// partitionedRound is one measurement of project-partitioned: it starts
// runners runner processes on a fresh key prefix, lets them all go at
// once, and returns the time until every partition has applied the
// run's events, with the processes' statistics (their lease changes up
// to their stop). Every process is stopped by its PID before it returns, error
// or not.
func partitionedRound(ctx context.Context, e *env, run partitionedRun, runners int, name string) (_ time.Duration, _ []runnerStats, err error) {
	prefix := e.prefix + name + ":"
	var procs []*runnerProc
	defer func() {
		for _, p := range procs {
			if kerr := killChild(p.Process); kerr != nil {
				err = errors.Join(err, kerr)
			}
			_ = p.stdin.Close()
		}
		err = errors.Join(err, deletePrefix(context.WithoutCancel(ctx), e.rdb, prefix))
	}()
	for i := range runners {
		p, err := startRunnerProc(runnerSpec{
			PostgresURL: e.dbURL, Schema: run.schema, RedisURL: e.redisURL, Prefix: prefix,
			Partitions: partitionedPartitions, Concurrency: e.sizes.PartitionedConcurrency,
			Apply: e.sizes.PartitionedApply, Owner: name + "-" + strconv.Itoa(i),
		})
		if err != nil {
			return 0, nil, err
		}
		procs = append(procs, p)
	}
	for _, p := range procs {
		l, err := p.line(ctx, time.Minute)
		if err != nil {
			return 0, nil, err
		}
		if l != "ready" {
			return 0, nil, fmt.Errorf("bench: %s said %q, want ready", p.Name(), l)
		}
	}
	wctx, cancel := context.WithTimeoutCause(ctx, 5*time.Minute, errors.New("bench: project-partitioned did not reach the head within 5 minutes"))
	defer cancel()
	// A process that dies ends the round.
	died := make(chan error, len(procs))
	for _, p := range procs {
		go func() {
			select {
			case <-p.Done():
				died <- fmt.Errorf("bench: %s exited early (%v): %s", p.Name(), p.Err(), strings.TrimSpace(p.stderr.String()))
			case <-wctx.Done():
			}
		}()
	}
	reader := projection.NewReader(e.rdb, prefix, run.store)
	start := time.Now()
	for _, p := range procs {
		if _, err := fmt.Fprintln(p.stdin, "go"); err != nil {
			return 0, nil, fmt.Errorf("bench: start %s: %w", p.Name(), err)
		}
	}
	type outcome struct {
		d   time.Duration
		err error
	}
	waited := make(chan outcome, 1)
	go func() {
		began, head := start, run.head
		if run.burst != nil {
			if err := waitSpread(wctx, reader, runners); err != nil {
				waited <- outcome{err: err}
				return
			}
			began = time.Now()
			res, err := run.store.Import(wctx, run.burst)
			if err != nil {
				waited <- outcome{err: err}
				return
			}
			head = res.Position
		}
		err := reader.WaitFor(wctx, projectionName, head)
		waited <- outcome{d: time.Since(began), err: err}
	}()
	var o outcome
	select {
	case o = <-waited:
		err = o.err
	case err = <-died:
	}
	if err != nil {
		if cerr := context.Cause(wctx); cerr != nil && !errors.Is(cerr, context.Canceled) {
			err = cerr
		}
		return 0, nil, err
	}
	cancel()
	// Stop them all at once, so none takes over what the others leave.
	for _, p := range procs {
		_ = p.stdin.Close()
	}
	stats := make([]runnerStats, len(procs))
	for i, p := range procs {
		if stats[i], err = p.finish(ctx); err != nil {
			return 0, nil, err
		}
		stats[i].Log = localproc.TailLines(strings.TrimSpace(p.stderr.String()), 5)
	}
	return o.d, stats, nil
}

// waitSpread waits until the projection's first build is done and every
// partition is held, by runners runners holding an equal share each.
func waitSpread(ctx context.Context, reader *projection.Reader, runners int) error {
	var last string
	for {
		st, err := reader.Status(ctx, projectionName)
		if err == nil && st.Ready {
			held := map[string]int{}
			for _, p := range st.Parts {
				if p.Owner != "" {
					held[p.Owner]++
				}
			}
			spread := len(held) == runners
			for _, n := range held {
				spread = spread && n == partitionedPartitions/runners
			}
			if spread {
				return nil
			}
			last = fmt.Sprint(held)
		} else if err != nil {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bench: the runners did not share the partitions (last: %s): %w", last, context.Cause(ctx))
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// partitionedRow makes a result of project-partitioned from a round.
func (e *env) partitionedRow(d time.Duration, stats []runnerStats, runners, total int, per []int, start string) (float64, map[string]any) {
	c := e.sizes.PartitionedConcurrency
	var applied, peak int64
	var waited, lastChange time.Duration
	var mem Memory
	final := make([]string, len(stats))
	timeline := make([]string, len(stats))
	var logs []string
	for i, st := range stats {
		if st.Log != "" {
			logs = append(logs, st.Log)
		}
		applied += st.Applied
		waited += st.Waited
		peak = max(peak, st.PeakApplying)
		mem.HeapEskit = max(mem.HeapEskit, st.Memory.HeapEskit)
		mem.RSSEskit = max(mem.RSSEskit, st.Memory.RSSEskit)
		var tl []string
		for _, h := range st.Held {
			tl = append(tl, fmt.Sprintf("%.3fs:%v", h.At.Seconds(), h.Parts))
			lastChange = max(lastChange, h.At)
		}
		timeline[i] = strings.Join(tl, " ")
		if len(st.Held) > 0 {
			final[i] = fmt.Sprint(st.Held[len(st.Held)-1].Parts)
		}
	}
	meanApply := e.sizes.PartitionedApply
	if applied > 0 {
		meanApply = waited / time.Duration(applied)
	}
	variant := fmt.Sprintf("%d runner", runners)
	if runners > 1 {
		variant += "s"
	}
	variant += fmt.Sprintf(", concurrency %d, %s", c, start)
	// The best the processes can do: c applies at a time each, each
	// taking the measured mean, and no more than one per partition.
	ideal := float64(min(runners*c, partitionedPartitions)) / meanApply.Seconds()
	params := map[string]any{
		"variant": variant, "events": total, "partitions": partitionedPartitions, "runners": runners,
		"concurrency": c, "start": start, "apply_ms": ms(e.sizes.PartitionedApply), "apply_ms_measured": ms(meanApply),
		"ideal_events_per_s": ideal, "applies": applied, "peak_partitions_applying": peak,
		"partition_events": per, "held_timeline": timeline, "held_at_end": final,
		"last_lease_change_s": lastChange.Seconds(),
		"peak_memory":         mem, "memory_note": "peak of the runner processes",
	}
	if len(logs) > 0 {
		params["runner_log"] = logs
	}
	if peak > int64(c) {
		params["concurrency_note"] = fmt.Sprintf("projection.WithConcurrency(%d) did not bound the partitions applied at once (%d seen); the slow service's %d connections per process bounded the throughput", c, peak, c)
		e.log.Warn("bench: projection.WithConcurrency did not bound the partitions a runner process applied at once",
			"runners", runners, "concurrency", c, "peak_partitions_applying", peak)
	}
	return rate(total, d), params
}

// partitionedEvents returns total events over streams of 10 (thousands of
// streams spread evenly over the partitions, so that no partition holds
// much more than its share), in imports of at most 10,000, and how many
// fall in each partition.
func partitionedEvents(reg *eventstore.Registry, total int) ([][]eventstore.StreamAppend, []int, error) {
	var out [][]eventstore.StreamAppend
	per := make([]int, partitionedPartitions)
	for k := 0; k < total; k += 10_000 {
		appends, err := streamBatch(reg, "part-"+strconv.Itoa(k), min(10_000, total-k), 10)
		if err != nil {
			return nil, nil, err
		}
		for _, a := range appends {
			per[eventstore.StreamPartition(a.StreamID, partitionedPartitions)] += len(a.Events)
		}
		out = append(out, appends)
	}
	return out, per, nil
}

// runProjectPartitioned measures project-partitioned (see the top of the
// file), with one runner process and with PartitionedRunners, in events
// per second until every partition has applied the head, in two ways:
//
//   - cold start: the store holds the events when the runners start; the
//     time runs from the start signal, so it includes the runners sharing
//     out the partitions (the first one to look takes every partition and
//     hands the excess back at its next lease renewal);
//   - settled: the runners start on an empty store and hold their shares
//     when the events are imported (one burst); the time runs from the
//     import.
//
// A row with several runners has the row with one as its baseline, so its
// ratio is the scale-out.
func runProjectPartitioned(ctx context.Context, e *env) ([]Result, error) {
	total := e.sizes.Partitioned
	n := e.sizes.PartitionedRunners
	if n < 2 {
		return nil, fmt.Errorf("project-partitioned compares 1 runner process with several: %d runners", n)
	}
	reg, err := newRegistry()
	if err != nil {
		return nil, err
	}
	cold, err := e.newStore(ctx, "bench_partitioned")
	if err != nil {
		return nil, err
	}
	defer cold.Close()
	imports, per, err := partitionedEvents(reg, total)
	if err != nil {
		return nil, err
	}
	for _, appends := range imports {
		if _, err := cold.Import(ctx, appends); err != nil {
			return nil, err
		}
	}
	head, err := cold.Head(ctx)
	if err != nil {
		return nil, err
	}
	var out []Result
	for _, settled := range []bool{false, true} {
		var one float64
		for _, runners := range []int{1, n} {
			run := partitionedRun{store: cold, schema: "bench_partitioned", head: head}
			start, name := "cold start", "cold"+strconv.Itoa(runners)
			if settled {
				start, name = "settled", "settled"+strconv.Itoa(runners)
				run.schema = "bench_partitioned_" + name
				s, err := e.newStore(ctx, run.schema)
				if err != nil {
					return nil, err
				}
				defer s.Close()
				run.store = s
				// One import: the burst must commit at once.
				evs, _, err := partitionedEvents(reg, total)
				if err != nil {
					return nil, err
				}
				for _, a := range evs {
					run.burst = append(run.burst, a...)
				}
			}
			d, stats, err := partitionedRound(ctx, e, run, runners, name)
			if err != nil {
				return nil, fmt.Errorf("%d runners, %s: %w", runners, start, err)
			}
			got, params := e.partitionedRow(d, stats, runners, total, per, start)
			if runners == 1 {
				one = got
				out = append(out, result("project-partitioned", "events/s", got, 0, params))
				continue
			}
			out = append(out, result("project-partitioned", "events/s", got, one, params).
				withTarget(target{ratio: true, min: true, bound: 2.5}))
		}
	}
	return out, nil
}
