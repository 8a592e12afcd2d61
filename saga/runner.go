package saga

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"maps"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/internal/lifecycle"
	"github.com/eskit/eskit/lease"
	"github.com/eskit/eskit/telemetry"
)

// Dispatcher sends the commands of a saga. *commandbus.Bus is one. The
// context carries the command's ID (commandbus.CommandIDFrom) and its
// correlation and causation IDs: a dispatcher that passes the ID on to
// the aggregate repository (commandbus.HandleWith does) makes a command
// sent twice, after a crash, take effect once.
type Dispatcher interface {
	Dispatch(ctx context.Context, cmd any) (commandbus.Result, error)
}

// DispatcherFunc adapts a function to Dispatcher.
type DispatcherFunc func(ctx context.Context, cmd any) (commandbus.Result, error)

// Dispatch implements Dispatcher.
func (f DispatcherFunc) Dispatch(ctx context.Context, cmd any) (commandbus.Result, error) {
	return f(ctx, cmd)
}

// Defaults of a Runner.
const (
	DefaultBatchSize        = 500
	DefaultPollInterval     = time.Second
	DefaultDispatchAttempts = 8
	DefaultStepAttempts     = 3
)

// DefaultDispatchBackoff paces the attempts at sending a failing command:
// 100 ms doubling to 30 s, a fifth of it random.
func DefaultDispatchBackoff() backoff.Policy {
	return backoff.Policy{Initial: 100 * time.Millisecond, Max: 30 * time.Second, Jitter: 0.2}
}

// DefaultStepBackoff paces the attempts at a failing step (which hold up
// the partition): 10 ms doubling to 200 ms.
func DefaultStepBackoff() backoff.Policy {
	return backoff.Policy{Initial: 10 * time.Millisecond, Max: 200 * time.Millisecond, Jitter: 0.2}
}

// RunnerOption configures a Runner.
type RunnerOption func(*runnerConfig)

type runnerConfig struct {
	partitions       int
	leases           lease.Store
	leaseOpts        []lease.Option
	log              *slog.Logger
	now              func() time.Time
	batch            int
	poll             time.Duration
	dispatchAttempts int
	dispatchBackoff  backoff.Policy
	stepAttempts     int
	stepBackoff      backoff.Policy
	restartBackoff   backoff.Policy
	permanent        func(error) bool
	tel              []telemetry.Option
}

// WithPartitions shares the saga's instances among n partitions (1 by
// default): an instance belongs to partition
// eventstore.StreamPartition(instance ID, n), each partition has its own
// checkpoint and lease, and runners in several processes share the
// partitions. The number must not change once instances exist.
func WithPartitions(n int) RunnerOption { return func(c *runnerConfig) { c.partitions = n } }

// WithLease runs each partition only while this runner holds its lease
// (named "saga/<saga>/<partition>") in store: runners in several processes
// then share the partitions, and one that freezes is replaced within the
// TTL; its late writes are refused by their token. opts configure the
// partitions' lease.Keepers. Without a lease, run one runner per saga.
func WithLease(store lease.Store, opts ...lease.Option) RunnerOption {
	return func(c *runnerConfig) { c.leases, c.leaseOpts = store, opts }
}

// WithLogger sets the logger (slog.Default() otherwise).
func WithLogger(l *slog.Logger) RunnerOption { return func(c *runnerConfig) { c.log = l } }

// WithClock sets the clock deadlines are judged by (time.Now otherwise).
func WithClock(now func() time.Time) RunnerOption { return func(c *runnerConfig) { c.now = now } }

// WithBatchSize sets how many records one read of the feed takes.
func WithBatchSize(n int) RunnerOption { return func(c *runnerConfig) { c.batch = n } }

// WithPollInterval sets the longest wait before the runner looks at the
// feed, the outbox and the deadlines again without being woken.
func WithPollInterval(d time.Duration) RunnerOption { return func(c *runnerConfig) { c.poll = d } }

// WithDispatchRetry sets how often a failing command is tried (attempts,
// the first included) and the delays in between; then the instance is
// parked.
func WithDispatchRetry(attempts int, p backoff.Policy) RunnerOption {
	return func(c *runnerConfig) { c.dispatchAttempts, c.dispatchBackoff = attempts, p }
}

// WithStepRetry sets how often a failing step is run before its instance
// is parked, and the delays in between (which hold up the partition:
// keep them short).
func WithStepRetry(attempts int, p backoff.Policy) RunnerOption {
	return func(c *runnerConfig) { c.stepAttempts, c.stepBackoff = attempts, p }
}

// WithPermanent sets the test of a command failure that retrying cannot
// cure: it goes to the OnRejected step (or parks the instance) at once.
// By default: errors matching aggregate.ErrRejected.
func WithPermanent(f func(error) bool) RunnerOption { return func(c *runnerConfig) { c.permanent = f } }

// WithTelemetry sets the meter provider of the runner's metrics.
func WithTelemetry(opts ...telemetry.Option) RunnerOption {
	return func(c *runnerConfig) { c.tel = append(c.tel, opts...) }
}

// Runner runs a saga: for each partition it follows the store's feed from
// the partition's checkpoint and, record by record, loads the instance,
// runs its step and commits in one write the new state, the commands to
// send, the deadlines and the checkpoint, under the partition's fencing
// token; then it sends the commands and fires the deadlines that fall
// due. See the package documentation.
type Runner[S any] struct {
	def   *Definition[S]
	store Store
	feed  eventstore.FeedReader
	disp  Dispatcher
	cfg   runnerConfig
	log   *slog.Logger
	tel   *metrics
	life  lifecycle.State
}

// Errors Runner.Ready returns while Run does not run. They are the same
// values as outbox.ErrNotStarted and projection.ErrNotStarted (and the
// ErrStopped of those packages).
var (
	// ErrNotStarted: Run has not been called or has not passed its
	// start-up checks yet.
	ErrNotStarted = lifecycle.ErrNotStarted
	// ErrStopped: Run has returned nil (its context ended).
	ErrStopped = lifecycle.ErrStopped
)

// NewRunner returns a runner of def over store, reading the records from
// feed (an eventstore.Store: its Subscribe, when it has one, wakes the
// runner as soon as records commit) and sending commands through disp.
func NewRunner[S any](def *Definition[S], store Store, feed eventstore.FeedReader, disp Dispatcher, opts ...RunnerOption) (*Runner[S], error) {
	if def == nil || store == nil || feed == nil || disp == nil {
		return nil, &InvalidError{Field: "runner", Reason: "needs a definition, a store, a feed and a dispatcher"}
	}
	cfg := runnerConfig{
		partitions: 1, now: time.Now, batch: DefaultBatchSize, poll: DefaultPollInterval,
		dispatchAttempts: DefaultDispatchAttempts, dispatchBackoff: DefaultDispatchBackoff(),
		stepAttempts: DefaultStepAttempts, stepBackoff: DefaultStepBackoff(),
		restartBackoff: backoff.Policy{Initial: 100 * time.Millisecond, Max: 10 * time.Second, Jitter: 0.2},
		permanent:      func(err error) bool { return errors.Is(err, aggregate.ErrRejected) },
	}
	for _, o := range opts {
		o(&cfg)
	}
	switch {
	case cfg.partitions < 1 || cfg.partitions > MaxPartitions:
		return nil, &InvalidError{Field: "partitions", Value: strconv.Itoa(cfg.partitions), Reason: fmt.Sprintf("want 1 to %d", MaxPartitions)}
	case cfg.batch < 1 || cfg.poll <= 0 || cfg.dispatchAttempts < 1 || cfg.stepAttempts < 1 || cfg.now == nil || cfg.permanent == nil:
		return nil, &InvalidError{Field: "runner options", Reason: "batch size, poll interval and attempts must be positive"}
	}
	if err := cfg.dispatchBackoff.Validate(); err != nil {
		return nil, &InvalidError{Field: "dispatch backoff", Reason: err.Error()}
	}
	r := &Runner[S]{def: def, store: store, feed: feed, disp: disp, cfg: cfg, log: cfg.log}
	if r.log == nil {
		r.log = slog.Default()
	}
	r.log = r.log.With("saga", def.name)
	r.tel = newMetrics(telemetry.NewConfig(cfg.tel...), def.name, cfg.now)
	return r, nil
}

// LeaseName returns the name of the lease of a saga's partition.
func LeaseName(saga string, partition int) string {
	return "saga/" + saga + "/" + strconv.Itoa(partition)
}

// Started returns a channel closed once Run has passed its start-up checks
// (the runner then takes its share of the partitions), or has returned;
// Ready tells which.
func (r *Runner[S]) Started() <-chan struct{} { return r.life.Started() }

// Done returns a channel closed once Run has returned, its leases
// released.
func (r *Runner[S]) Done() <-chan struct{} { return r.life.Done() }

// Ready returns nil while Run runs past its start-up checks, however many
// partitions the runner leads; ErrNotStarted before that; and once Run
// has returned, Run's error, or ErrStopped when Run returned nil. It
// suits a readiness probe: it says that this process runs the saga or
// stands by to take a partition over within the lease TTL, not that the
// saga advances (see the metrics for that).
func (r *Runner[S]) Ready() error { return r.life.Ready() }

// Run runs every partition until ctx ends; then it returns nil. A Runner
// runs once: a second Run fails at once.
//
// It first checks what no retry can fix, and returns an error at once
// when that fails: the partitions' lease keepers must be valid (an error
// matching lease.ErrInvalidArgument otherwise: a TTL too short for the
// renew interval, an empty holder, ...). Then, with a
// lease (WithLease), each partition runs while this runner holds its
// lease and stands by otherwise; store and feed failures end the
// partition's leadership, which the Keeper takes up again. Without a
// lease, a partition that fails is restarted after a backoff, and Run
// returns an error matching ErrFenced when another runner took a
// partition over (run one runner per saga then).
//
// Stopping: cancel ctx and wait for Run to return (or for Done). The
// leases are released on the way, so another runner takes the partitions
// over at once; a process that exits or freezes first leaves them to
// expire: another runner takes over within the lease TTL, and the
// frozen one's writes are refused when it wakes (ErrFenced).
func (r *Runner[S]) Run(ctx context.Context) error {
	if err := r.life.Begin(); err != nil {
		return fmt.Errorf("saga %q: %w", r.def.name, err)
	}
	err := r.run(ctx)
	if ctx.Err() != nil && !isStartError(err) {
		err = nil
	}
	return r.life.End(err)
}

// startError is a start-up check that failed.
type startError struct{ err error }

func (e *startError) Error() string { return e.err.Error() }
func (e *startError) Unwrap() error { return e.err }

func isStartError(err error) bool {
	var se *startError
	return errors.As(err, &se)
}

func (r *Runner[S]) run(ctx context.Context) error {
	keepers := make([]*lease.Keeper, r.cfg.partitions)
	if r.cfg.leases != nil {
		for p := range keepers {
			k, err := lease.NewKeeper(r.cfg.leases, LeaseName(r.def.name, p), append([]lease.Option{lease.WithLogger(r.log.With("partition", p))}, r.cfg.leaseOpts...)...)
			if err != nil {
				return &startError{fmt.Errorf("saga %q partition %d: %w", r.def.name, p, err)}
			}
			keepers[p] = k
		}
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopObserving := r.tel.observe()
	defer stopObserving()
	r.life.Up()
	for p := range r.cfg.partitions {
		wg.Go(func() {
			if err := r.runPartition(ctx, p, keepers[p]); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
				cancel()
			}
		})
	}
	wg.Wait()
	return first
}

func (r *Runner[S]) runPartition(ctx context.Context, p int, k *lease.Keeper) error {
	log := r.log.With("partition", p)
	if k != nil {
		return k.Run(ctx, func(ctx context.Context, h *lease.Held) error {
			log.Info("saga: leading partition", "token", h.Token())
			err := r.work(ctx, p, h.Token(), h.Err, nil)
			if ctx.Err() != nil || errors.Is(err, ErrFenced) {
				log.Info("saga: partition lost", "token", h.Token(), "error", err)
				return nil
			}
			return err
		})
	}
	retry := backoff.New(r.cfg.restartBackoff)
	var token uint64 // 0: the next one
	for ctx.Err() == nil {
		t, err := r.claimNext(ctx, p, token)
		if err == nil {
			token = t
			err = r.work(ctx, p, token, nil, nil)
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, ErrFenced):
			return fmt.Errorf("saga %q partition %d: another runner took over: %w", r.def.name, p, err)
		case err != nil:
			log.Error("saga: partition failed; restarting", "error", err)
			if backoff.Sleep(ctx, retry.Next()) != nil {
				return nil
			}
		}
	}
	return nil
}

// claimNext returns token, or when it is 0 the token after the
// partition's current one, claimed.
func (r *Runner[S]) claimNext(ctx context.Context, p int, token uint64) (uint64, error) {
	if token != 0 {
		return token, nil
	}
	c, err := r.store.Claim(ctx, Fence{Saga: r.def.name, Partition: p})
	return c.Token, err
}

// Drain runs every partition until nothing is left to do as of the
// feed's head after the commands it sent: the feed is read to its head
// (as at the start of Drain, and at least up to the events of every
// command Drain sent, which it waits for when the feed shows them late,
// as PostgreSQL's gap-safe feed can), every due command sent, every due
// deadline fired and every held record of a live instance applied; and
// again, over all the partitions, for what that caused, until a pass
// finds nothing to do. A command whose retry is not due yet, and a
// deadline not due yet, are left for later. The head at the start
// includes every record committed before Drain: a feed that can tell how
// many committed records it does not show yet (FeedLag, as
// *pgstore.Store's) is waited for until it shows them all.
//
// It is Run for tests, examples and tools; do not run it next to a Run
// of the same saga (it claims the partitions without a lease).
func (r *Runner[S]) Drain(ctx context.Context) error {
	d := &drainer{}
	if err := r.settle(ctx); err != nil {
		return err
	}
	head, err := r.feed.Head(ctx)
	if err != nil {
		return fmt.Errorf("saga %q: feed head: %w", r.def.name, err)
	}
	d.target = head
	workers := make([]*worker[S], r.cfg.partitions)
	for p := range workers {
		token, err := r.claimNext(ctx, p, 0)
		if err != nil {
			return err
		}
		if workers[p], err = r.newWorker(ctx, p, token, nil, d); err != nil {
			return err
		}
	}
	for {
		d.did = false
		for _, w := range workers {
			if err := w.loop(ctx, nil); err != nil {
				return err
			}
		}
		if !d.did {
			break
		}
	}
	for _, w := range workers {
		if err := r.tel.refresh(ctx, r.store, w.fence); err != nil {
			return err
		}
	}
	return nil
}

// Adopt takes the feed up to upTo as handled already: by the process
// manager this saga replaces, or by nobody, for a saga deployed onto a
// history it must not act on. It runs the saga's steps over every
// partition's records up to upTo, keeping what they do to the instances
// (their states, deadlines, completions) but not the commands they send
// (the process it replaces sent them; or they are not wanted), and moves
// the checkpoints to upTo. Partitions already at or past upTo are left
// as they are, so running Adopt again does nothing.
//
// Run it once, before the saga's runners start (it claims the partitions
// without a lease, as Drain does; a runner holding one is fenced off and
// claims it again).
func (r *Runner[S]) Adopt(ctx context.Context, upTo eventstore.Position) error {
	if upTo.IsZero() {
		return nil
	}
	if err := r.settle(ctx); err != nil {
		return err
	}
	for p := range r.cfg.partitions {
		token, err := r.claimNext(ctx, p, 0)
		if err != nil {
			return err
		}
		w, err := r.newWorker(ctx, p, token, nil, nil)
		if err != nil {
			return err
		}
		if !upTo.After(w.cp) {
			continue
		}
		w.upTo = upTo
		n := 0
		for upTo.After(w.cp) {
			k, err := w.feed(ctx)
			if err != nil {
				return err
			}
			if k == 0 {
				break
			}
			n += k
		}
		if w.cp != upTo {
			// The feed ends before upTo (upTo names no record): the
			// checkpoint is upTo all the same.
			if err := w.commit(ctx, Commit{Checkpoint: upTo}); err != nil {
				return err
			}
		}
		w.log.Info("saga: adopted the feed", "saga", r.def.name, "up_to", upTo.String(), "records", n)
	}
	return nil
}

// feedLagger is a feed that can tell how many committed records it does
// not show yet (*pgstore.Store).
type feedLagger interface {
	FeedLag(ctx context.Context) (eventstore.FeedLag, error)
}

// settle waits, up to DrainFeedWait, until the feed shows every record
// committed, when it can tell.
func (r *Runner[S]) settle(ctx context.Context) error {
	l, ok := r.feed.(feedLagger)
	if !ok {
		return nil
	}
	start := time.Now()
	for {
		lag, err := l.FeedLag(ctx)
		if err != nil {
			return fmt.Errorf("saga %q: feed lag: %w", r.def.name, err)
		}
		if lag.Events == 0 {
			return nil
		}
		if time.Since(start) > DrainFeedWait {
			return fmt.Errorf("saga %q: %w: %d committed records not shown after %s", r.def.name, ErrFeedBehind, lag.Events, DrainFeedWait)
		}
		if err := backoff.Sleep(ctx, 2*time.Millisecond); err != nil {
			return err
		}
	}
}

// drainer is the state of a Drain across its passes over the partitions.
type drainer struct {
	// target is the feed position every partition reads up to: the head
	// at the start, and the last event of every command sent.
	target eventstore.Position
	// did is set when a partition did anything in the current pass.
	did bool
	// waitSince is when Drain began to wait for the feed (zero: it
	// does not wait).
	waitSince time.Time
}

// DrainFeedWait is how long Drain waits for the feed to show the events
// of the commands it sent before it fails with ErrFeedBehind.
const DrainFeedWait = 30 * time.Second

// ErrFeedBehind reports that Drain gave up waiting for the feed to show
// the records committed before it or the events of the commands it sent:
// the dispatcher writes to another store than the runner's feed, or a
// long transaction holds the feed back.
var ErrFeedBehind = errors.New("saga: the feed does not show the events of the commands sent")

// sent notes the position of a sent command's last event.
func (d *drainer) sent(pos eventstore.Position) {
	if d != nil && pos.After(d.target) {
		d.target = pos
	}
}

// worker runs one partition under one token.
type worker[S any] struct {
	r     *Runner[S]
	fence Fence
	check func() error // the lease's check before writes; nil for none
	drain *drainer     // nil unless draining
	log   *slog.Logger

	cp, saved eventstore.Position
	caughtUp  bool
	lastAt    time.Time // RecordedAt of the last record read
	// upTo, unless zero, makes the worker adopt the feed up to it (see
	// Adopt): it reads no further, and commits no command.
	upTo eventstore.Position
}

// count refreshes the partition's metrics every countEvery until ctx ends.
func (w *worker[S]) count(ctx context.Context) {
	t := time.NewTicker(countEvery)
	defer t.Stop()
	for {
		if err := w.r.tel.refresh(ctx, w.r.store, w.fence); err != nil && ctx.Err() == nil {
			w.log.Warn("saga: count instances", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// work runs partition p under token until ctx ends; with drain set,
// until nothing is left to do (see Drain).
func (r *Runner[S]) work(ctx context.Context, p int, token uint64, check func() error, drain *drainer) error {
	w, err := r.newWorker(ctx, p, token, check, drain)
	if err != nil {
		return err
	}
	var wake <-chan struct{}
	if drain == nil {
		subCtx, stop := context.WithCancel(ctx)
		var counting sync.WaitGroup
		defer func() {
			stop()
			counting.Wait()
			r.tel.drop(p)
		}()
		wake = w.wakeups(subCtx)
		counting.Go(func() { w.count(subCtx) })
	}
	return w.loop(ctx, wake)
}

// newWorker claims partition p with token and returns its worker, from
// the partition's checkpoint.
func (r *Runner[S]) newWorker(ctx context.Context, p int, token uint64, check func() error, drain *drainer) (*worker[S], error) {
	w := &worker[S]{r: r, fence: Fence{Saga: r.def.name, Partition: p, Token: token}, check: check, drain: drain, log: r.log.With("partition", p, "token", token)}
	c, err := r.store.Claim(ctx, w.fence)
	if err != nil {
		return nil, err
	}
	w.cp, w.saved = c.Checkpoint, c.Checkpoint
	return w, nil
}

// loop runs rounds until ctx ends, waiting for wake or the next due
// time in between; when draining, until nothing is left to do.
func (w *worker[S]) loop(ctx context.Context, wake <-chan struct{}) error {
	r, p, drain := w.r, w.fence.Partition, w.drain
	for {
		did, err := w.round(ctx)
		if err != nil {
			if ctx.Err() != nil && drain == nil {
				return ctx.Err()
			}
			return err
		}
		if did {
			if drain != nil {
				drain.did, drain.waitSince = true, time.Time{}
			}
			continue
		}
		if drain != nil {
			if !drain.target.After(w.cp) {
				return nil
			}
			// The feed does not show the events of a command sent yet:
			// wait for them (a while: a dispatcher that writes to
			// another store than the feed would make Drain wait for ever).
			if drain.waitSince.IsZero() {
				drain.waitSince = time.Now()
			}
			if time.Since(drain.waitSince) > DrainFeedWait {
				return fmt.Errorf("saga %q partition %d: %w: the feed is at %s after %s, the commands sent reached %s",
					r.def.name, p, ErrFeedBehind, w.cp, DrainFeedWait, drain.target)
			}
			if err := backoff.Sleep(ctx, 5*time.Millisecond); err != nil {
				return err
			}
			continue
		}
		if err := w.wait(ctx, wake); err != nil {
			return err
		}
	}
}

type subscriber interface {
	Subscribe(ctx context.Context, after eventstore.Position) iter.Seq2[eventstore.Record, error]
}

// wakeups returns a channel that receives when new records commit, when
// the feed can tell (nil otherwise).
func (w *worker[S]) wakeups(ctx context.Context) <-chan struct{} {
	sub, ok := w.r.feed.(subscriber)
	if !ok {
		return nil
	}
	head, err := w.r.feed.Head(ctx)
	if err != nil {
		return nil
	}
	ch := make(chan struct{}, 1)
	go func() {
		for _, err := range sub.Subscribe(ctx, head) {
			if err != nil {
				return
			}
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}()
	return ch
}

func (w *worker[S]) wait(ctx context.Context, wake <-chan struct{}) error {
	d := w.r.cfg.poll
	next, ok, err := w.r.store.NextDue(ctx, w.fence)
	if err != nil {
		return err
	}
	if ok {
		d = min(d, max(next.Sub(w.r.cfg.now()), 5*time.Millisecond))
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-wake:
	case <-t.C:
	}
	return nil
}

// round does one pass over a page of the feed, the outbox, the held
// records and the deadlines, and reports whether it did anything.
func (w *worker[S]) round(ctx context.Context) (bool, error) {
	n := 0
	for _, step := range []func(context.Context) (int, error){w.feed, w.dispatch, w.held, w.deadlines} {
		k, err := step(ctx)
		if err != nil {
			return false, err
		}
		n += k
	}
	return n > 0, nil
}

// commit writes c under the fence, after the lease's own check.
func (w *worker[S]) commit(ctx context.Context, c Commit) error {
	if w.check != nil {
		if err := w.check(); err != nil {
			return err
		}
	}
	c.Fence, c.Now = w.fence, w.r.cfg.now()
	if !w.upTo.IsZero() {
		// Adopting: the steps' commands were sent by another, or are
		// not wanted.
		for i := range c.Updates {
			c.Updates[i].Enqueue = nil
		}
	}
	if err := w.r.store.Commit(ctx, c); err != nil {
		return err
	}
	if !c.Checkpoint.IsZero() {
		w.saved = c.Checkpoint
	}
	return nil
}

// feed applies one page of the feed after the checkpoint.
func (w *worker[S]) feed(ctx context.Context) (int, error) {
	recs, err := w.r.feed.ReadAll(ctx, w.cp, w.r.cfg.batch)
	if err != nil {
		return 0, fmt.Errorf("saga %q: read the feed after %s: %w", w.fence.Saga, w.cp, err)
	}
	w.caughtUp = len(recs) < w.r.cfg.batch
	recs = inOrder(recs, w.cp)
	if !w.upTo.IsZero() {
		i := 0
		for i < len(recs) && !recs[i].Position.After(w.upTo) {
			i++
		}
		recs = recs[:i]
	}
	for _, rec := range recs {
		if err := w.record(ctx, rec); err != nil {
			return 0, err
		}
		w.cp = rec.Position
		if rec.RecordedAt.After(w.lastAt) {
			w.lastAt = rec.RecordedAt
		}
	}
	if w.cp != w.saved {
		if err := w.commit(ctx, Commit{Checkpoint: w.cp}); err != nil {
			return 0, err
		}
	}
	return len(recs), nil
}

// inOrder returns the records after cp in Position order, each once: a
// feed that repeats or reorders records (a bug, a replica) cannot make
// the runner apply one twice or out of order within a page.
func inOrder(recs []eventstore.Record, cp eventstore.Position) []eventstore.Record {
	if !slices.IsSortedFunc(recs, func(a, b eventstore.Record) int { return a.Position.Compare(b.Position) }) {
		recs = slices.Clone(recs)
		slices.SortStableFunc(recs, func(a, b eventstore.Record) int { return a.Position.Compare(b.Position) })
	}
	out := recs[:0:0]
	for _, r := range recs {
		if !r.Position.After(cp) || (len(out) > 0 && r.Position == out[len(out)-1].Position) {
			continue
		}
		out = append(out, r)
	}
	return out
}

// record routes one record of the feed.
func (w *worker[S]) record(ctx context.Context, rec eventstore.Record) error {
	h := w.r.def.route(rec)
	if h == nil {
		return nil
	}
	ev, id, ok := w.correlate(h, rec)
	if !ok || eventstore.StreamPartition(id, w.r.cfg.partitions) != w.fence.Partition {
		return nil
	}
	return w.apply(ctx, rec, h, ev, id, 0)
}

// correlate decodes the record and names its instance; false: not one of
// the saga's (or unusable, logged).
func (w *worker[S]) correlate(h *handler[S], rec eventstore.Record) (ev any, id string, ok bool) {
	if v, err := w.r.def.events.Decode(rec); err == nil {
		ev = v
	} else if h.typed || !errors.Is(err, eventstore.ErrUnknownEventType) {
		{
			w.r.tel.skipped(context.Background(), "undecodable")
			w.log.Error("saga: skipping a record that does not decode", "event_id", rec.ID, "type", rec.Type, "stream", rec.StreamID, "error", err)
			return nil, "", false
		}
	}
	err := safely(func() error { id = h.correlate(rec, ev); return nil })
	if err != nil {
		w.r.tel.skipped(context.Background(), "correlate_failed")
		w.log.Error("saga: skipping a record whose correlation failed", "event_id", rec.ID, "error", err)
		return nil, "", false
	}
	if id == "" {
		return nil, "", false
	}
	if err := ValidateInstanceID(id); err != nil {
		w.r.tel.skipped(context.Background(), "invalid_instance_id")
		w.log.Error("saga: skipping a record that names an invalid instance", "event_id", rec.ID, "stream", rec.StreamID, "error", err)
		return nil, "", false
	}
	return ev, id, true
}

// apply runs the step of a record for instance id: from the feed (held
// 0) or a held record (held is its Seq).
func (w *worker[S]) apply(ctx context.Context, rec eventstore.Record, h *handler[S], ev any, id string, held int64) error {
	in, found, err := w.r.store.Load(ctx, w.fence.Saga, id)
	if err != nil {
		return fmt.Errorf("saga %q: load instance %q: %w", w.fence.Saga, id, err)
	}
	var cp eventstore.Position
	if held == 0 {
		cp = rec.Position
	}
	u := Update{ID: id, Version: in.Version, Partition: w.fence.Partition, Unhold: held}
	skip := func() error {
		if held == 0 {
			return nil // the page's checkpoint covers it
		}
		return w.commit(ctx, Commit{Updates: []Update{u}})
	}
	switch {
	case !found && !h.starts:
		return skip()
	case found && in.Done:
		return skip()
	case found && !rec.Position.After(in.LastPosition):
		w.r.tel.skipped(ctx, "duplicate")
		return skip()
	case found && held == 0 && (in.Park != nil || in.Held > 0):
		// Behind a parked instance or its held records: keep the order.
		u.Hold = []eventstore.Record{rec}
		return w.commit(ctx, Commit{Checkpoint: cp, Updates: []Update{u}})
	}
	ns := StepID(w.fence.Saga, id, rec.ID)
	in.ID = id
	s, attempts, err := w.run(ctx, in, found, func(s *Step[S]) {
		s.rec, s.at, s.ns = &rec, rec.RecordedAt, ns
	}, func(ctx context.Context, s *Step[S]) error { return h.handle(ctx, s, rec, ev) })
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		w.log.Error("saga: step failed; parking the instance", "instance", id, "event_id", rec.ID, "type", rec.Type, "attempts", attempts, "error", err)
		w.r.tel.step(ctx, "record", "parked")
		u.Park = &Park{Kind: ParkRecord, Ref: rec.ID.String(), Error: err.Error(), Attempts: attempts}
		if !found {
			u.State, err = w.initialState()
			if err != nil {
				return err
			}
		}
		if held == 0 {
			u.Hold = []eventstore.Record{rec}
		}
		u.Unhold = 0
		return w.commit(ctx, Commit{Checkpoint: cp, Updates: []Update{u}})
	}
	if err := s.toUpdate(&u); err != nil {
		return err
	}
	u.LastPosition = rec.Position
	if err := w.commit(ctx, Commit{Checkpoint: cp, Updates: []Update{u}}); err != nil {
		return err
	}
	w.r.tel.step(ctx, "record", "ok")
	return nil
}

func (w *worker[S]) initialState() ([]byte, error) {
	var s S
	if w.r.def.initial != nil {
		s = w.r.def.initial()
	}
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("saga %q: encode the initial state: %w", w.fence.Saga, err)
	}
	return b, nil
}

// run runs a step (fresh state each attempt) up to the step attempts.
func (w *worker[S]) run(ctx context.Context, in Instance, found bool, setup func(*Step[S]), call func(context.Context, *Step[S]) error) (*Step[S], int, error) {
	var last error
	for attempt := 1; ; attempt++ {
		s, err := w.newStep(in, found)
		if err != nil {
			return nil, attempt, err // the state does not decode: retrying will not help
		}
		setup(s)
		err = safely(func() error { return call(ctx, s) })
		if err == nil {
			err = s.err()
		}
		if err == nil {
			return s, attempt, nil
		}
		last = err
		if attempt >= w.r.cfg.stepAttempts || ctx.Err() != nil {
			return nil, attempt, last
		}
		if backoff.Sleep(ctx, w.r.cfg.stepBackoff.Next(attempt)) != nil {
			return nil, attempt, last
		}
	}
}

func (w *worker[S]) newStep(in Instance, found bool) (*Step[S], error) {
	d := w.r.def
	// An instance parked by its very first step starts when that step is
	// retried.
	s := &Step[S]{saga: d.name, id: in.ID, isNew: !found || in.LastPosition.IsZero(), commands: d.commands, pending: map[string]Deadline{}, known: map[string]bool{}}
	for n := range d.deadlines {
		s.known[n] = true
	}
	if found {
		if err := json.Unmarshal(in.State, &s.state); err != nil {
			return nil, fmt.Errorf("decode the state of instance %q: %w", in.ID, err)
		}
		for _, dl := range in.Deadlines {
			s.pending[dl.Name] = dl
		}
	} else if d.initial != nil {
		s.state = d.initial()
	}
	return s, nil
}

// toUpdate writes the step's effects into u.
func (s *Step[S]) toUpdate(u *Update) error {
	b, err := json.Marshal(s.state)
	if err != nil {
		return fmt.Errorf("saga %q: encode the state of instance %q: %w", s.saga, s.id, err)
	}
	u.State = b
	u.Enqueue = s.sends
	for _, n := range slices.Sorted(maps.Keys(s.schedule)) {
		u.Schedule = append(u.Schedule, s.schedule[n])
	}
	u.Cancel = slices.Sorted(maps.Keys(s.cancel))
	u.Complete = s.complete
	return nil
}

// safely runs fn, turning a panic into an error.
func safely(fn func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("panic: %v\n%s", v, debug.Stack())
		}
	}()
	return fn()
}

// held applies the oldest held record of every live instance.
func (w *worker[S]) held(ctx context.Context) (int, error) {
	due, err := w.r.store.DueRecords(ctx, w.fence, w.r.cfg.batch)
	if err != nil {
		return 0, err
	}
	for _, d := range due {
		rec := d.Held.Record
		h := w.r.def.route(rec)
		var ev any
		ok := false
		if h != nil {
			var id string
			ev, id, ok = w.correlate(h, rec)
			ok = ok && id == d.Instance
		}
		if !ok {
			// The definition no longer routes it here: drop it.
			in, _, err := w.r.store.Load(ctx, w.fence.Saga, d.Instance)
			if err != nil {
				return 0, err
			}
			if err := w.commit(ctx, Commit{Updates: []Update{{ID: d.Instance, Version: in.Version, Partition: w.fence.Partition, Unhold: d.Held.Seq}}}); err != nil {
				return 0, err
			}
			continue
		}
		if err := w.apply(ctx, rec, h, ev, d.Instance, d.Held.Seq); err != nil {
			return 0, err
		}
	}
	return len(due), nil
}

// horizon is the latest due time a deadline may have to fire now: the
// clock, but not past the last record read until the feed is caught up,
// so that a record written before a deadline is applied before it even
// when the runner catches up late.
func (w *worker[S]) horizon() time.Time {
	now := w.r.cfg.now()
	if !w.caughtUp && w.lastAt.Before(now) {
		return w.lastAt
	}
	return now
}

// deadlines fires the due deadlines.
func (w *worker[S]) deadlines(ctx context.Context) (int, error) {
	horizon := w.horizon()
	due, err := w.r.store.DueDeadlines(ctx, w.fence, horizon, w.r.cfg.batch)
	if err != nil {
		return 0, err
	}
	for _, d := range due {
		if err := w.fire(ctx, d); err != nil {
			return 0, err
		}
	}
	if len(due) < w.r.cfg.batch {
		w.r.tel.firedUpTo(w.fence.Partition, horizon)
	}
	return len(due), nil
}

func (w *worker[S]) fire(ctx context.Context, d DueDeadline) error {
	in, found, err := w.r.store.Load(ctx, w.fence.Saga, d.Instance)
	if err != nil {
		return err
	}
	dl, ok := in.Deadline(d.Deadline.Name)
	if !found || !ok || dl.ID != d.Deadline.ID {
		return nil // changed since it was listed
	}
	u := Update{ID: in.ID, Version: in.Version, Partition: w.fence.Partition}
	handle := w.r.def.deadlines[dl.Name]
	var s *Step[S]
	attempts := 0
	if handle == nil {
		err = fmt.Errorf("deadline %q is not declared (OnDeadline)", dl.Name)
	} else {
		s, attempts, err = w.run(ctx, in, true, func(s *Step[S]) {
			s.deadline, s.at, s.ns = &dl, dl.Due, dl.ID
		}, handle)
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		w.log.Error("saga: deadline step failed; parking the instance", "instance", in.ID, "deadline", dl.Name, "error", err)
		w.r.tel.step(ctx, "deadline", "parked")
		u.Park = &Park{Kind: ParkDeadline, Ref: dl.Name, Error: err.Error(), Attempts: attempts}
		return w.commit(ctx, Commit{Updates: []Update{u}})
	}
	if err := s.toUpdate(&u); err != nil {
		return err
	}
	u.Fired = &dl
	if err := w.commit(ctx, Commit{Updates: []Update{u}}); err != nil {
		return err
	}
	w.r.tel.step(ctx, "deadline", "ok")
	w.r.tel.deadlineLag(ctx, w.r.cfg.now().Sub(dl.Due))
	return nil
}

// dispatch sends the oldest due command of every live instance.
func (w *worker[S]) dispatch(ctx context.Context) (int, error) {
	due, err := w.r.store.DueCommands(ctx, w.fence, w.r.cfg.now(), w.r.cfg.batch)
	if err != nil {
		return 0, err
	}
	for _, d := range due {
		if err := w.send(ctx, d); err != nil {
			return 0, err
		}
	}
	return len(due), nil
}

func (w *worker[S]) send(ctx context.Context, d DueCommand) error {
	c := d.Command
	cmd, err := w.r.def.commands.Decode(eventstore.Record{Event: eventstore.Event{ID: c.ID, Type: c.Type, Data: c.Data, Metadata: c.Metadata}})
	if err != nil {
		c.Attempts++
		c.LastError = "decode: " + err.Error()
		w.r.tel.dispatched(ctx, "parked")
		return w.failed(ctx, d.Instance, c, true)
	}
	dctx := commandbus.WithCommandID(ctx, c.ID)
	if v := c.Metadata.Get(eventstore.MetaCorrelationID); v != "" {
		dctx = commandbus.WithCorrelationID(dctx, v)
	}
	if v := c.Metadata.Get(eventstore.MetaCausationID); v != "" {
		dctx = commandbus.WithCausationID(dctx, v)
	}
	var res commandbus.Result
	err = safely(func() error {
		var err error
		res, err = w.r.disp.Dispatch(dctx, cmd)
		return err
	})
	if err == nil {
		if w.check != nil {
			if err := w.check(); err != nil {
				return err
			}
		}
		if err := w.r.store.Sent(ctx, w.fence, d.Instance, c.Seq); err != nil {
			return err
		}
		w.drain.sent(res.Position)
		if res.Duplicate {
			w.r.tel.dispatched(ctx, telemetry.OutcomeDuplicate)
		} else {
			w.r.tel.dispatched(ctx, telemetry.OutcomeOK)
		}
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	c.Attempts++
	c.LastError = err.Error()
	if w.r.cfg.permanent(err) {
		w.r.tel.dispatched(ctx, telemetry.OutcomeRejected)
		if w.r.def.onRejected == nil {
			w.log.Warn("saga: command rejected; parking the instance (no OnRejected step)", "instance", d.Instance, "command", c.Type, "command_id", c.ID, "error", err)
			return w.failed(ctx, d.Instance, c, true)
		}
		return w.rejected(ctx, d.Instance, c, cmd, err)
	}
	park := c.Attempts >= w.r.cfg.dispatchAttempts
	if park {
		w.log.Error("saga: command keeps failing; parking the instance", "instance", d.Instance, "command", c.Type, "command_id", c.ID, "attempts", c.Attempts, "error", err)
		w.r.tel.dispatched(ctx, "parked")
	} else {
		w.log.Warn("saga: command failed; will retry", "instance", d.Instance, "command", c.Type, "command_id", c.ID, "attempts", c.Attempts, "error", err)
		w.r.tel.dispatched(ctx, telemetry.OutcomeError)
		c.NextAttempt = w.r.cfg.now().Add(w.r.cfg.dispatchBackoff.Next(c.Attempts))
	}
	return w.failed(ctx, d.Instance, c, park)
}

func (w *worker[S]) failed(ctx context.Context, id string, c Command, park bool) error {
	if w.check != nil {
		if err := w.check(); err != nil {
			return err
		}
	}
	return w.r.store.Failed(ctx, w.fence, id, c, park)
}

// rejected runs the OnRejected step of a command rejected for good, and
// drops the command in the same commit.
func (w *worker[S]) rejected(ctx context.Context, id string, c Command, cmd any, cause error) error {
	in, found, err := w.r.store.Load(ctx, w.fence.Saga, id)
	if err != nil {
		return err
	}
	if !found {
		return nil
	}
	rej := Rejection{Command: cmd, CommandID: c.ID, Err: cause}
	s, _, err := w.run(ctx, in, true, func(s *Step[S]) {
		s.at, s.ns = w.r.cfg.now(), RejectionStepID(c.ID)
	}, func(ctx context.Context, s *Step[S]) error { return w.r.def.onRejected(ctx, s, rej) })
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.LastError = fmt.Sprintf("rejected (%v), and the rejection step failed: %v", cause, err)
		w.r.tel.step(ctx, "rejection", "parked")
		return w.failed(ctx, id, c, true)
	}
	u := Update{ID: id, Version: in.Version, Partition: w.fence.Partition, Sent: c.Seq}
	if err := s.toUpdate(&u); err != nil {
		return err
	}
	if err := w.commit(ctx, Commit{Updates: []Update{u}}); err != nil {
		return err
	}
	w.r.tel.step(ctx, "rejection", "ok")
	return nil
}
