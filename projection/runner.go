package projection

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/internal/backoff"
	"github.com/eskit/eskit/telemetry"
)

// Runner defaults.
const (
	// DefaultBatchSize is how many records one batch (one MULTI/EXEC)
	// applies at most.
	DefaultBatchSize = 1000
	// DefaultMaxWait is how long a live batch waits for more messages
	// after its first one before it is applied.
	DefaultMaxWait = 2 * time.Millisecond
	// DefaultAckWait is the live consumer's ack wait.
	DefaultAckWait = 30 * time.Second
	// DefaultLeaseTTL is how long a lease lasts without renewal: a standby
	// takes over at most this long after the active runner died.
	DefaultLeaseTTL = 5 * time.Second
	// DefaultAttempts is how many times a record is applied before it is
	// parked.
	DefaultAttempts = 3
	// DefaultMinBackoff and DefaultMaxBackoff bound the pause between
	// attempts of a failing record, and between restarts after errors.
	DefaultMinBackoff = 10 * time.Millisecond
	// DefaultMaxBackoff: see DefaultMinBackoff.
	DefaultMaxBackoff = 1 * time.Second
	// DefaultConsumerPrefix starts the durable consumer names of the live
	// side (see ConsumerName).
	DefaultConsumerPrefix = "eskit-projection"
)

// Option configures a Runner.
type Option func(*config)

type config struct {
	prefix         string
	js             jetstream.JetStream
	stream         string
	filter         string
	consumerPrefix string
	batchSize      int
	maxWait        time.Duration
	ackWait        time.Duration
	leaseTTL       time.Duration
	renewEvery     time.Duration
	attempts       int
	minBackoff     time.Duration
	maxBackoff     time.Duration
	poll           time.Duration
	wait           eventstore.WaitFunc
	logger         *slog.Logger
	owner          string
	telemetry      []telemetry.Option

	// Hooks for tests (see export_test.go).
	beforeCommit func(ctx context.Context, name string)
	keepLease    bool
}

// WithPrefix sets the key prefix of every key the runner writes (default
// none). Readers must use the same prefix.
func WithPrefix(prefix string) Option { return func(c *config) { c.prefix = prefix } }

// WithJetStream makes the runner follow live events from a durable pull
// consumer per projection on the given stream (the one the outbox relay
// publishes to). Without it, the runner follows the store's feed.
func WithJetStream(js jetstream.JetStream, stream string) Option {
	return func(c *config) { c.js, c.stream = js, stream }
}

// WithFilterSubject restricts the live consumers to a subject filter (for
// example "<prefix>.>" of the relay); by default they see the whole stream.
func WithFilterSubject(filter string) Option { return func(c *config) { c.filter = filter } }

// WithConsumerPrefix sets the prefix of the durable consumer names
// (DefaultConsumerPrefix by default).
func WithConsumerPrefix(p string) Option { return func(c *config) { c.consumerPrefix = p } }

// WithBatchSize sets the maximum number of records per batch.
func WithBatchSize(n int) Option { return func(c *config) { c.batchSize = n } }

// WithMaxWait sets how long a live batch waits for more messages after its
// first one (DefaultMaxWait): the batch is applied when it is full or that
// long after its first message arrived, whichever comes first, so a record
// waits at most that long for the records batched with it.
func WithMaxWait(d time.Duration) Option { return func(c *config) { c.maxWait = d } }

// WithAckWait sets the live consumer's ack wait (used when the runner
// creates the consumer).
func WithAckWait(d time.Duration) Option { return func(c *config) { c.ackWait = d } }

// WithLease sets the lease's time to live and how often the active runner
// renews it (and a standby tries to take it). renew must be below ttl;
// zero means ttl/3.
func WithLease(ttl, renew time.Duration) Option {
	return func(c *config) { c.leaseTTL, c.renewEvery = ttl, renew }
}

// WithRetry sets how many times a failing record is applied before it is
// parked, and the backoff between attempts.
func WithRetry(attempts int, minBackoff, maxBackoff time.Duration) Option {
	return func(c *config) { c.attempts, c.minBackoff, c.maxBackoff = attempts, minBackoff, maxBackoff }
}

// WithPollInterval sets the longest pause between reads of a checkpoint in
// WaitFor, and of the feed when following the store (DefaultPollInterval).
func WithPollInterval(d time.Duration) Option { return func(c *config) { c.poll = d } }

// WithWaiter sets how the runner waits for new records when it follows the
// store's feed. By default it uses the feed's Subscribe when it has one, and
// polls otherwise.
func WithWaiter(wait eventstore.WaitFunc) Option { return func(c *config) { c.wait = wait } }

// WithLogger sets the logger (slog.Default by default).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithOwner names the runner in its lease owner token (a random suffix is
// always added), so operators can tell which process is active.
func WithOwner(name string) Option { return func(c *config) { c.owner = name } }

// Runner runs projections: each applies batches of records to its Redis read
// model, with its own checkpoint and lease. Create it with NewRunner, then
// call Run.
type Runner struct {
	rdb    redis.UniversalClient
	feed   eventstore.FeedReader
	cfg    config
	log    *slog.Logger
	reader *Reader
	token  string
	tel    *runnerTelemetry

	projs map[string]*proj
	order []*proj

	acquireScript *redis.Script
	renewScript   *redis.Script
	releaseScript *redis.Script

	running atomic.Bool
	bgMu    sync.Mutex
	bgCtx   context.Context // Run's context, for background work
	bg      sync.WaitGroup
}

// proj is a projection's runtime state in a runner.
type proj struct {
	p    Projection
	name string
	k    keys

	// mu serialises everything that writes the active namespace: batches,
	// parked-record operations and the rebuild's switch.
	mu      sync.Mutex
	cur     *nsState        // active namespace while the runner is active
	sessCtx context.Context // the active session's context

	// leaseMu keeps renewals (which touch the lease key) from aborting a
	// commit's WATCH: commits share it, renewals take it alone.
	leaseMu sync.RWMutex

	rebuilding atomic.Bool

	vmu       sync.Mutex // guards the view below
	active    bool
	version   int64
	ckpt      eventstore.Position
	lastAt    time.Time     // RecordedAt of the last applied record
	parked    int           // parked records of the active namespace
	notify    chan struct{} // closed and replaced after every commit
	lastErr   error
	lastErrAt time.Time
}

// nsState is the applied state of one namespace.
type nsState struct {
	ns     Namespace
	ckpt   checkpoint
	replay bool
	// replayUntil, during a projection's first build, is the feed's head
	// when the build began: records up to it are history (replayed), later
	// ones are new events even when the catch-up reads them. Zero
	// otherwise.
	replayUntil eventstore.Position
	// serving is true while the namespace is the active one; it changes
	// only under proj.mu.
	serving bool
	blocked map[string]eventstoreID // stream -> first parked record
	parked  int
}

// NewRunner returns a runner of the given projections on rdb, reading
// history (catch-up, rebuilds) from feed.
func NewRunner(rdb redis.UniversalClient, feed eventstore.FeedReader, projections []Projection, opts ...Option) (*Runner, error) {
	cfg := config{
		consumerPrefix: DefaultConsumerPrefix,
		batchSize:      DefaultBatchSize,
		maxWait:        DefaultMaxWait,
		ackWait:        DefaultAckWait,
		leaseTTL:       DefaultLeaseTTL,
		attempts:       DefaultAttempts,
		minBackoff:     DefaultMinBackoff,
		maxBackoff:     DefaultMaxBackoff,
		poll:           DefaultPollInterval,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.renewEvery == 0 {
		cfg.renewEvery = cfg.leaseTTL / 3
	}
	switch {
	case rdb == nil || feed == nil:
		return nil, errors.New("projection: NewRunner needs a Redis client and a feed")
	case len(projections) == 0:
		return nil, errors.New("projection: NewRunner needs at least one projection")
	case cfg.batchSize <= 0 || cfg.attempts <= 0:
		return nil, errors.New("projection: batch size and attempts must be positive")
	case cfg.maxWait <= 0 || cfg.ackWait <= 0 || cfg.poll <= 0:
		return nil, errors.New("projection: max wait, ack wait and poll interval must be positive")
	case cfg.leaseTTL < 10*time.Millisecond || cfg.renewEvery <= 0 || cfg.renewEvery >= cfg.leaseTTL:
		return nil, errors.New("projection: lease needs 0 < renew interval < ttl (ttl at least 10ms)")
	case cfg.minBackoff <= 0 || cfg.maxBackoff < cfg.minBackoff:
		return nil, errors.New("projection: backoff needs 0 < min <= max")
	case cfg.js != nil && cfg.stream == "":
		return nil, errors.New("projection: WithJetStream needs a stream name")
	}
	if cfg.logger == nil {
		cfg.logger = slog.Default()
	}
	if cfg.wait == nil {
		if sub, ok := feed.(subscriber); ok {
			cfg.wait = subscribeWaiter(sub)
		}
	}
	r := &Runner{
		rdb:    rdb,
		feed:   feed,
		cfg:    cfg,
		log:    cfg.logger.With("component", "projection"),
		reader: &Reader{rdb: rdb, prefix: cfg.prefix, feed: feed, poll: cfg.poll},
		token:  ownerToken(cfg.owner),
		projs:  make(map[string]*proj, len(projections)),

		acquireScript: redis.NewScript(acquireLua),
		renewScript:   redis.NewScript(renewLua),
		releaseScript: redis.NewScript(releaseLua),
	}
	for _, p := range projections {
		if p == nil || p.Name() == "" {
			return nil, errors.New("projection: every projection needs a name")
		}
		if _, dup := r.projs[p.Name()]; dup {
			return nil, fmt.Errorf("projection: two projections named %q", p.Name())
		}
		pr := &proj{p: p, name: p.Name(), k: newKeys(cfg.prefix, p.Name()), notify: make(chan struct{})}
		r.projs[pr.name] = pr
		r.order = append(r.order, pr)
	}
	names := make([]string, len(r.order))
	for i, pr := range r.order {
		names[i] = pr.name
	}
	r.tel = newRunnerTelemetry(telemetry.NewConfig(cfg.telemetry...), names)
	return r, nil
}

// eventstoreID is an event ID (kept as the string form used as a field of
// the parked hash).
type eventstoreID = string

func ownerToken(name string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	if name == "" {
		return hex.EncodeToString(b[:])
	}
	return name + "/" + hex.EncodeToString(b[:])
}

// Owner returns the runner's lease owner token.
func (r *Runner) Owner() string { return r.token }

// Reader returns a Reader with the runner's prefix and feed.
func (r *Runner) Reader() *Reader { return r.reader }

func (r *Runner) proj(name string) (*proj, error) {
	pr, ok := r.projs[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownProjection, name)
	}
	return pr, nil
}

// Run runs every projection until ctx ends: each one waits for its lease,
// catches up from the store, then follows live events. It returns nil when
// ctx ends (releasing the leases it holds); a runner runs once.
func (r *Runner) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("projection: Runner.Run called twice")
	}
	r.bgMu.Lock()
	r.bgCtx = ctx
	r.bgMu.Unlock()
	defer r.observe()()
	names := make([]any, 0, len(r.order))
	for _, pr := range r.order {
		names = append(names, pr.name)
	}
	if len(names) > 0 {
		if err := r.rdb.SAdd(ctx, registryKey(r.cfg.prefix), names...).Err(); err != nil && ctx.Err() == nil {
			r.log.Warn("projection: register projection names", "err", err)
		}
	}
	var wg sync.WaitGroup
	for _, pr := range r.order {
		wg.Go(func() { r.runProjection(ctx, pr) })
	}
	wg.Wait()
	r.bg.Wait()
	return nil
}

// background runs fn on Run's context, tracked so Run waits for it.
func (r *Runner) background(fn func(ctx context.Context)) {
	r.bgMu.Lock()
	ctx := r.bgCtx
	r.bgMu.Unlock()
	if ctx == nil || ctx.Err() != nil {
		return
	}
	r.bg.Go(func() { fn(ctx) })
}

// runProjection alternates between standby (waiting for the lease) and
// active sessions until ctx ends.
func (r *Runner) runProjection(ctx context.Context, pr *proj) {
	log := r.log.With("projection", pr.name)
	bo := backoff.New(r.cfg.minBackoff, r.cfg.maxBackoff)
	standby := false
	for ctx.Err() == nil {
		ok, err := r.acquire(ctx, pr)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.recordError(pr, fmt.Errorf("acquire lease: %w", err))
			_ = bo.Sleep(ctx)
			continue
		}
		if !ok {
			if !standby {
				log.Info("projection standby: another runner holds the lease")
				standby = true
			}
			_ = backoff.Sleep(ctx, r.cfg.renewEvery)
			continue
		}
		standby = false
		log.Info("projection active", "owner", r.token)
		err = r.session(ctx, pr)
		if ctx.Err() != nil {
			return
		}
		switch {
		case errors.Is(err, ErrLeaseLost):
			log.Warn("projection lease lost", "err", err)
			bo.Reset()
		case err != nil:
			r.recordError(pr, err)
			log.Error("projection session failed; restarting", "err", err)
			_ = bo.Sleep(ctx)
		default:
			bo.Reset()
		}
	}
}

const acquireLua = `
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0`

const renewLua = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0`

const releaseLua = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`

// acquire takes the projection's lease (SET NX PX), or extends it when the
// runner already holds it.
func (r *Runner) acquire(ctx context.Context, pr *proj) (bool, error) {
	pr.leaseMu.Lock()
	defer pr.leaseMu.Unlock()
	n, err := r.acquireScript.Run(ctx, r.rdb, []string{pr.k.lease()}, r.token, r.cfg.leaseTTL.Milliseconds()).Int()
	return n == 1, err
}

// session is one period of holding the lease: it renews the lease in the
// background and serves the projection until ctx ends, the lease is lost
// or serving fails.
func (r *Runner) session(ctx context.Context, pr *proj) error {
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		r.renewLoop(sctx, cancel, pr)
	}()
	controlled := make(chan struct{})
	go func() {
		defer close(controlled)
		r.controlLoop(sctx, pr)
	}()
	err := r.serve(sctx, pr)
	cancel(nil)
	<-renewed
	<-controlled
	pr.deactivate()
	if cause := context.Cause(sctx); errors.Is(cause, ErrLeaseLost) {
		err = cause
	}
	if ctx.Err() != nil {
		if !r.cfg.keepLease {
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			pr.leaseMu.Lock()
			if err := r.releaseScript.Run(rctx, r.rdb, []string{pr.k.lease()}, r.token).Err(); err != nil {
				r.log.Warn("projection: release lease", "projection", pr.name, "err", err)
			}
			pr.leaseMu.Unlock()
			rcancel()
		}
		return nil
	}
	return err
}

// renewLoop renews the lease until ctx ends; it cancels the session with
// ErrLeaseLost when another runner holds the lease or renewals keep failing
// for a whole TTL.
func (r *Runner) renewLoop(ctx context.Context, cancel context.CancelCauseFunc, pr *proj) {
	t := time.NewTicker(r.cfg.renewEvery)
	defer t.Stop()
	lastOK := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pr.leaseMu.Lock()
		n, err := r.renewScript.Run(ctx, r.rdb, []string{pr.k.lease()}, r.token, r.cfg.leaseTTL.Milliseconds()).Int()
		pr.leaseMu.Unlock()
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			if time.Since(lastOK) >= r.cfg.leaseTTL {
				cancel(fmt.Errorf("%w: renewals failing since %s: %w", ErrLeaseLost, lastOK.Format(time.RFC3339Nano), err))
				return
			}
		case n == 0:
			cancel(fmt.Errorf("%w: another runner holds it", ErrLeaseLost))
			return
		default:
			lastOK = time.Now()
		}
	}
}

// serve loads the active namespace, catches up from the store, then
// follows live events.
func (r *Runner) serve(ctx context.Context, pr *proj) error {
	var cons jetstream.Consumer
	if r.cfg.js != nil {
		// The consumer exists before the catch-up starts, so every event
		// published after the catch-up's last read reaches it.
		var err error
		if cons, err = r.ensureConsumer(ctx, pr); err != nil {
			return err
		}
	}
	st, err := r.load(ctx, pr)
	if err != nil {
		return err
	}
	if err := r.boundFirstBuild(ctx, pr, st); err != nil {
		return err
	}
	pr.activate(ctx, st)
	if _, err := r.catchUp(ctx, pr, false); err != nil {
		return ignoreCancel(ctx, err)
	}
	pr.mu.Lock()
	pr.cur.replay = false
	pr.mu.Unlock()
	if cons != nil {
		return ignoreCancel(ctx, r.live(ctx, pr, cons))
	}
	return ignoreCancel(ctx, r.follow(ctx, pr))
}

// boundFirstBuild fixes, for a namespace that has never been built, the
// end of its history: the feed's head when the first build begins. It is
// stored with the namespace's checkpoint, so a runner that takes over a
// first build midway keeps replaying the same history, and events appended
// while the build runs are applied as new events (their side effects fire)
// whether the catch-up or the live consumer reaches them.
func (r *Runner) boundFirstBuild(ctx context.Context, pr *proj, st *nsState) error {
	key := pr.k.checkpoint(st.ns.Version)
	stored, err := r.rdb.HGet(ctx, key, replayUntilField).Result()
	if errors.Is(err, redis.Nil) {
		if !st.ckpt.pos.IsZero() {
			// Built before the bound was recorded: history is done.
			st.replay = false
			return nil
		}
		head, herr := r.feed.Head(ctx)
		if herr != nil {
			return fmt.Errorf("projection %q: first build: read the feed's head: %w", pr.name, herr)
		}
		// The first runner to record the bound wins; all use the stored one.
		if err := r.rdb.HSetNX(ctx, key, replayUntilField, head.String()).Err(); err != nil {
			return fmt.Errorf("projection %q: first build: record its end: %w", pr.name, err)
		}
		stored, err = r.rdb.HGet(ctx, key, replayUntilField).Result()
	}
	if err != nil {
		return fmt.Errorf("projection %q: first build: read its end: %w", pr.name, err)
	}
	until, err := eventstore.ParsePosition(stored)
	if err != nil {
		return fmt.Errorf("projection %q: first build: stored end %q: %w", pr.name, stored, err)
	}
	st.replayUntil = until
	st.replay = st.ckpt.pos.Before(until)
	return nil
}

// replayUntilField is the checkpoint hash's field holding the end of a
// namespace's first build (see boundFirstBuild).
const replayUntilField = "replay_until"

// splitReplay returns how many of recs (in feed order) belong to st's
// history while it is replaying it: all of them outside a first build.
func splitReplay(st *nsState, recs []eventstore.Record) int {
	if !st.replay || st.replayUntil.IsZero() {
		return len(recs)
	}
	for i, rec := range recs {
		if rec.Position.After(st.replayUntil) {
			return i
		}
	}
	return len(recs)
}

// applyFeedBatch applies records read from the feed: the part that is
// history as a replay, the rest (once the history is done) as new events.
// The caller holds pr.mu.
func (r *Runner) applyFeedBatch(ctx context.Context, pr *proj, st *nsState, recs []eventstore.Record) error {
	if n := splitReplay(st, recs); n < len(recs) {
		if n > 0 {
			if err := r.applyBatch(ctx, pr, st, recs[:n]); err != nil {
				return err
			}
		}
		st.replay = false
		recs = recs[n:]
	}
	return r.applyBatch(ctx, pr, st, recs)
}

// ignoreCancel drops the error a cancelled session's operations return.
func ignoreCancel(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		return nil
	}
	return err
}

// load reads the active namespace's checkpoint and parked records.
func (r *Runner) load(ctx context.Context, pr *proj) (*nsState, error) {
	if err := r.rdb.SetNX(ctx, pr.k.active(), 1, 0).Err(); err != nil {
		return nil, fmt.Errorf("projection %q: init active namespace: %w", pr.name, err)
	}
	v, err := activeVersion(ctx, r.rdb, pr.k)
	if err != nil {
		return nil, err
	}
	return r.loadNamespace(ctx, pr, v)
}

func (r *Runner) loadNamespace(ctx context.Context, pr *proj, v int64) (*nsState, error) {
	c, err := readCheckpoint(ctx, r.rdb, pr.k, v)
	if err != nil {
		return nil, err
	}
	parked, err := readParked(ctx, r.rdb, pr.k, v)
	if err != nil {
		return nil, err
	}
	st := &nsState{ns: pr.k.namespace(v), ckpt: c, replay: c.pos.IsZero()}
	st.setParked(parked)
	return st, nil
}

// setParked rebuilds the blocked-stream index from the parked records.
func (st *nsState) setParked(parked []ParkedRecord) {
	st.blocked = make(map[string]eventstoreID)
	st.parked = len(parked)
	for _, p := range parked {
		if _, ok := st.blocked[p.Record.StreamID]; !ok {
			st.blocked[p.Record.StreamID] = p.Record.ID.String()
		}
	}
}

// catchUp applies the feed from the active checkpoint until a page comes
// back short (the head at the time). With once, it reads one page only. It
// reports whether the feed was exhausted.
func (r *Runner) catchUp(ctx context.Context, pr *proj, once bool) (bool, error) {
	for {
		pr.mu.Lock()
		st := pr.cur
		recs, err := r.feed.ReadAll(ctx, st.ckpt.pos, r.cfg.batchSize)
		if err != nil {
			err = fmt.Errorf("projection %q: read feed: %w", pr.name, err)
		} else if len(recs) > 0 {
			err = r.applyFeedBatch(ctx, pr, st, recs)
		}
		pr.mu.Unlock()
		if err != nil {
			return false, err
		}
		if len(recs) < r.cfg.batchSize {
			return true, nil
		}
		if once {
			return false, nil
		}
	}
}

// catchUpTo applies the feed from st's checkpoint until it reaches target
// (or the feed ends). The caller holds pr.mu.
func (r *Runner) catchUpTo(ctx context.Context, pr *proj, st *nsState, target eventstore.Position) error {
	for st.ckpt.pos.Before(target) {
		recs, err := r.feed.ReadAll(ctx, st.ckpt.pos, r.cfg.batchSize)
		if err != nil {
			return fmt.Errorf("projection %q: read feed: %w", pr.name, err)
		}
		if len(recs) == 0 {
			return nil
		}
		if err := r.applyFeedBatch(ctx, pr, st, recs); err != nil {
			return err
		}
	}
	return nil
}

// follow tails the store's feed (when no broker is configured).
func (r *Runner) follow(ctx context.Context, pr *proj) error {
	for {
		done, err := r.catchUp(ctx, pr, true)
		if err != nil {
			return err
		}
		if !done {
			continue
		}
		pr.mu.Lock()
		pos := pr.cur.ckpt.pos
		pr.mu.Unlock()
		wctx, cancel := context.WithTimeout(ctx, r.cfg.poll)
		if r.cfg.wait != nil {
			_ = r.cfg.wait(wctx, pos)
		} else {
			<-wctx.Done()
		}
		cancel()
		if ctx.Err() != nil {
			return nil
		}
	}
}

// subscriber is a feed that can tell when records after a Position appear.
type subscriber interface {
	Subscribe(ctx context.Context, after eventstore.Position) iter.Seq2[eventstore.Record, error]
}

// subscribeWaiter turns a subscriber into a WaitFunc: it returns once the
// subscription yields anything after the Position.
func subscribeWaiter(sub subscriber) eventstore.WaitFunc {
	return func(ctx context.Context, after eventstore.Position) error {
		for range sub.Subscribe(ctx, after) {
			break
		}
		return ctx.Err()
	}
}

func (pr *proj) activate(ctx context.Context, st *nsState) {
	pr.mu.Lock()
	st.serving = true
	pr.cur, pr.sessCtx = st, ctx
	pr.mu.Unlock()
	pr.vmu.Lock()
	pr.active = true
	pr.vmu.Unlock()
	pr.publish(st)
}

func (pr *proj) deactivate() {
	pr.mu.Lock()
	if pr.cur != nil {
		pr.cur.serving = false
	}
	pr.cur, pr.sessCtx = nil, nil
	pr.mu.Unlock()
	pr.vmu.Lock()
	pr.active = false
	close(pr.notify)
	pr.notify = make(chan struct{})
	pr.vmu.Unlock()
}

// publish makes st's progress visible to WaitFor and wakes waiters.
func (pr *proj) publish(st *nsState) {
	pr.vmu.Lock()
	pr.version, pr.ckpt = st.ns.Version, st.ckpt.pos
	pr.lastAt, pr.parked = st.ckpt.lastAt, st.parked
	close(pr.notify)
	pr.notify = make(chan struct{})
	pr.vmu.Unlock()
}

// wake returns the channel closed at the next commit, and the local
// checkpoint when this runner is active.
func (pr *proj) wake() (<-chan struct{}, eventstore.Position, bool) {
	pr.vmu.Lock()
	defer pr.vmu.Unlock()
	return pr.notify, pr.ckpt, pr.active
}

// activeState returns the active namespace and session context, or
// ErrNotActive.
func (pr *proj) activeState() (*nsState, context.Context, error) {
	if pr.cur == nil {
		return nil, nil, fmt.Errorf("%w: %q", ErrNotActive, pr.name)
	}
	return pr.cur, pr.sessCtx, nil
}

// recordError keeps err as the projection's last error, locally and in
// Redis.
func (r *Runner) recordError(pr *proj, err error) {
	now := time.Now()
	pr.vmu.Lock()
	pr.lastErr, pr.lastErrAt = err, now
	pr.vmu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = r.rdb.HSet(ctx, pr.k.lastError(), "msg", err.Error(), "at", strconv.FormatInt(now.UnixNano(), 10)).Err()
}

// Active reports whether this runner currently holds the projection's
// lease and applies it.
func (r *Runner) Active(name string) bool {
	pr, ok := r.projs[name]
	if !ok {
		return false
	}
	pr.vmu.Lock()
	defer pr.vmu.Unlock()
	return pr.active
}

// Namespace returns the projection's active namespace (see
// Reader.Namespace).
func (r *Runner) Namespace(ctx context.Context, name string) (Namespace, error) {
	return r.reader.Namespace(ctx, name)
}

// Status returns the projection's status (see Reader.Status), with Active
// and this runner's last error.
func (r *Runner) Status(ctx context.Context, name string) (Status, error) {
	pr, err := r.proj(name)
	if err != nil {
		return Status{}, err
	}
	st, err := r.reader.Status(ctx, name)
	pr.vmu.Lock()
	st.Active = pr.active
	if pr.lastErr != nil && pr.lastErrAt.After(st.LastErrorAt) {
		st.LastError, st.LastErrorAt = pr.lastErr.Error(), pr.lastErrAt
	}
	pr.vmu.Unlock()
	return st, err
}

// Parked lists the parked records of the projection's active namespace.
func (r *Runner) Parked(ctx context.Context, name string) ([]ParkedRecord, error) {
	if _, err := r.proj(name); err != nil {
		return nil, err
	}
	return r.reader.Parked(ctx, name)
}

// WaitFor blocks until the projection's active checkpoint reaches pos. A
// commit by this runner wakes it at once; progress made by another process
// is seen by polling Redis. When ctx's deadline passes first it returns a
// *TimeoutError (matching ErrTimeout and context.DeadlineExceeded).
func (r *Runner) WaitFor(ctx context.Context, name string, pos eventstore.Position) error {
	pr, ok := r.projs[name]
	if !ok {
		return r.reader.WaitFor(ctx, name, pos)
	}
	return waitFor(ctx, name, pos, r.cfg.poll, pr.wake, func(ctx context.Context) (eventstore.Position, error) {
		return r.reader.Checkpoint(ctx, name)
	})
}

// ConsumerName returns the durable consumer name a runner with the given
// consumer prefix uses for a projection: characters other than letters,
// digits, "-" and "_" become "_", and a hash of the name is appended when
// any was replaced, so distinct names keep distinct consumers.
func ConsumerName(consumerPrefix, projection string) string {
	clean := []byte(projection)
	changed := false
	for i, c := range clean {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			clean[i], changed = '_', true
		}
	}
	name := consumerPrefix + "_" + string(clean)
	if changed {
		name += "_" + strconv.FormatUint(uint64(fnv32(projection)), 16)
	}
	return name
}

func fnv32(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}
