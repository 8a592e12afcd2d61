package projection

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/internal/lifecycle"
	"github.com/eskit/eskit/natsevent"
	"github.com/eskit/eskit/telemetry"
)

// Source is what a runner reads from the event store: the feed (catch-up,
// rebuilds, verification) and single streams (to fill a hole in what the
// broker delivered). Every eskit store is one.
type Source interface {
	eventstore.FeedReader
	ReadStream(ctx context.Context, streamID string, from int64) iter.Seq2[eventstore.Record, error]
}

// Runner runs projections: each partition of each projection applies
// batches of records to its Redis read model, with its own checkpoint and
// lease. Runners in several processes share the partitions. Create it with
// NewRunner, run it with Run; Started, Ready and Done tell how Run is
// doing.
type Runner struct {
	target Target
	src    Source
	cfg    config
	log    *slog.Logger
	reader *Reader
	token  string
	tel    *runnerTelemetry
	slots  chan struct{} // concurrency limit, nil when unlimited
	pages  pageCache     // feed pages shared by partitions

	projs map[string]*proj
	order []*proj

	be backend

	life  lifecycle.State
	bgMu  sync.Mutex
	bgCtx context.Context // Run's context, for background work
	bg    sync.WaitGroup
}

// proj is a projection's runtime state in a runner.
type proj struct {
	p          Projection
	name       string
	k          keys
	partitions int
	parts      []*part

	vmu       sync.Mutex
	lastErr   error
	lastErrAt time.Time
	switched  chan struct{} // closed and replaced when this runner switches the active version
}

// switchedChan returns a channel closed when this runner next switches the
// projection's active version.
func (pr *proj) switchedChan() <-chan struct{} {
	pr.vmu.Lock()
	defer pr.vmu.Unlock()
	return pr.switched
}

// signalSwitched wakes the waiters of switchedChan.
func (pr *proj) signalSwitched() {
	pr.vmu.Lock()
	defer pr.vmu.Unlock()
	close(pr.switched)
	pr.switched = make(chan struct{})
}

// NewRunner returns a runner of the given projections with their read
// models in Redis (rdb), reading history (catch-up, rebuilds,
// verification) from src. It is NewRunnerOn(Redis(rdb), ...).
func NewRunner(rdb redis.UniversalClient, src Source, projections []Projection, opts ...Option) (*Runner, error) {
	if rdb == nil {
		return nil, errors.New("projection: NewRunner needs a Redis client and a source")
	}
	return NewRunnerOn(Redis(rdb), src, projections, opts...)
}

// NewRunnerOn returns a runner of the given projections with their read
// models in target (Redis, Postgres), reading history (catch-up,
// rebuilds, verification) from src.
func NewRunnerOn(target Target, src Source, projections []Projection, opts ...Option) (*Runner, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.consumerPrefix == "" {
		cfg.consumerPrefix = DefaultConsumerPrefix
		if _, ok := target.(pgTarget); ok {
			cfg.consumerPrefix = DefaultPostgresConsumerPrefix
		}
	}
	if cfg.renewEvery == 0 {
		cfg.renewEvery = cfg.leaseTTL / 3
	}
	switch {
	case target == nil || src == nil:
		return nil, errors.New("projection: NewRunner needs a target and a source")
	case len(projections) == 0:
		return nil, errors.New("projection: NewRunner needs at least one projection")
	case cfg.batchSize <= 0 || cfg.attempts <= 0:
		return nil, errors.New("projection: batch size and attempts must be positive")
	case cfg.maxWait <= 0 || cfg.ackWait <= 0 || cfg.poll <= 0 || cfg.heartbeat <= 0 || cfg.verifyEvery <= 0:
		return nil, errors.New("projection: max wait, ack wait, heartbeat, verify and poll intervals must be positive")
	case cfg.leaseTTL < 10*time.Millisecond || cfg.renewEvery <= 0 || cfg.renewEvery+cfg.leaseTTL/10 >= cfg.leaseTTL:
		return nil, errors.New("projection: lease needs 0 < renew interval < 0.9 × ttl (ttl at least 10ms)")
	case cfg.js != nil && cfg.stream == "":
		return nil, errors.New("projection: WithJetStream needs a stream name")
	case cfg.concurrency < 0:
		return nil, errors.New("projection: concurrency must not be negative")
	}
	if err := cfg.backoff.Validate(); err != nil {
		return nil, fmt.Errorf("projection: %w", err)
	}
	if err := ValidatePrefix(cfg.prefix); err != nil {
		return nil, err
	}
	cfg.prefix = KeyPrefix(cfg.prefix)
	if cfg.logger == nil {
		cfg.logger = slog.Default()
	}
	if cfg.wait == nil {
		if sub, ok := src.(subscriber); ok {
			cfg.wait = subscribeWaiter(sub)
		}
	}
	token := ownerToken(cfg.owner)
	be, err := target.backend(cfg.prefix)
	if err != nil {
		return nil, err
	}
	r := &Runner{
		src:    src,
		cfg:    cfg,
		log:    cfg.logger.With("component", "projection"),
		reader: &Reader{be: be, prefix: cfg.prefix, feed: src, poll: cfg.poll},
		token:  token,
		projs:  make(map[string]*proj, len(projections)),
		target: target,
		be:     be,
	}
	if cfg.concurrency > 0 {
		r.slots = make(chan struct{}, cfg.concurrency)
	}
	for _, p := range projections {
		if p == nil {
			return nil, errors.New("projection: nil projection")
		}
		if err := ValidateName(p.Name()); err != nil {
			return nil, err
		}
		if _, dup := r.projs[p.Name()]; dup {
			return nil, fmt.Errorf("projection: two projections named %q", p.Name())
		}
		n := partitionsOf(p)
		if n < 1 || n > eventstore.StreamBuckets {
			return nil, fmt.Errorf("projection %q: %d partitions: want 1 to %d", p.Name(), n, eventstore.StreamBuckets)
		}
		pr := &proj{p: p, name: p.Name(), k: newKeys(cfg.prefix, p.Name()), partitions: n, switched: make(chan struct{})}
		for i := range n {
			pt := &part{pr: pr, idx: i, notify: make(chan struct{}), kick: make(chan struct{}, 1),
				log: r.log.With("projection", pr.name, "partition", i)}
			if pt.keeper, err = r.newKeeper(pt); err != nil {
				return nil, err
			}
			pr.parts = append(pr.parts, pt)
		}
		r.projs[pr.name] = pr
		r.order = append(r.order, pr)
	}
	if c, ok := be.(interface{ configure([]Projection) error }); ok {
		if err := c.configure(projections); err != nil {
			return nil, err
		}
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

// Reader returns a Reader with the runner's prefix and source.
func (r *Runner) Reader() *Reader { return r.reader }

func (r *Runner) proj(name string) (*proj, error) {
	pr, ok := r.projs[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownProjection, name)
	}
	return pr, nil
}

// Errors Runner.Ready returns while Run does not run. They are the same
// values as outbox.ErrNotStarted and outbox.ErrStopped.
var (
	// ErrNotStarted: Run has not been called or has not passed its
	// start-up checks yet.
	ErrNotStarted = lifecycle.ErrNotStarted
	// ErrStopped: Run has returned nil (its context ended).
	ErrStopped = lifecycle.ErrStopped
)

// Started returns a channel closed once Run has passed its start-up checks
// (the runner then takes its share of the partitions), or has returned;
// Ready tells which.
func (r *Runner) Started() <-chan struct{} { return r.life.Started() }

// Done returns a channel closed once Run has returned, its leases
// released.
func (r *Runner) Done() <-chan struct{} { return r.life.Done() }

// Ready returns nil while Run runs past its start-up checks, however many
// partitions the runner holds (Held, Status tell); ErrNotStarted before
// that; and once Run has returned, Run's error, or ErrStopped when Run
// returned nil. It suits a readiness probe.
func (r *Runner) Ready() error { return r.life.Ready() }

// Run runs every projection until ctx ends, then returns nil. A Runner
// runs once.
//
// It first checks what no retry can fix, and returns an error at once
// when that fails: with WithJetStream, that the server supports JetStream
// (an error matching natsevent.ErrUnsupported otherwise); that Redis
// accepts the runner's credentials and commands; and that each
// projection's stored configuration (its partitions) matches this
// runner's (a *ConfigError otherwise). It then registers the projections,
// takes its share of their partitions' leases (see the package doc), and
// for each partition it holds catches up from the store and then follows
// live events. Failures of Redis, NATS or the store are logged, recorded as
// the projection's last error (Status) and retried: a partition whose
// session failed is restarted after the backoff policy's delay
// (WithBackoffPolicy).
//
// Stopping: cancel ctx and wait for Run to return. It releases the leases
// it holds on the way, so other runners take the partitions over at once;
// a process that exits before Run returns leaves them to expire after the
// lease TTL (WithLease).
func (r *Runner) Run(ctx context.Context) error {
	if err := r.life.Begin(); err != nil {
		return fmt.Errorf("projection: %w", err)
	}
	err := r.run(ctx)
	if ctx.Err() != nil {
		err = nil
	}
	return r.life.End(err)
}

func (r *Runner) run(ctx context.Context) error {
	r.bgMu.Lock()
	r.bgCtx = ctx
	r.bgMu.Unlock()
	defer r.bg.Wait()
	if err := r.start(ctx); err != nil {
		return err
	}
	r.life.Up()
	defer r.observe()()
	r.schedule(ctx)
	return nil
}

// start runs the start-up checks and registers the projections.
func (r *Runner) start(ctx context.Context) error {
	if r.cfg.js != nil {
		if err := natsevent.CheckJetStream(ctx, r.cfg.js, natsevent.FeatureJetStream); err != nil {
			return fmt.Errorf("projection: %w", err)
		}
	}
	for _, pr := range r.order {
		err := r.be.register(ctx, pr.name, pr.partitions)
		var ce *ConfigError
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.As(err, &ce), isConfigError(err):
			return err
		default:
			// Registered again by every session that starts.
			r.log.Warn("projection: register", "projection", pr.name, "err", err)
		}
	}
	return nil
}

// isConfigError reports a Redis error that no retry can fix: the server
// refuses the runner's credentials (NOAUTH, WRONGPASS) or commands
// (NOPERM).
func isConfigError(err error) bool {
	return redis.IsAuthError(err) || redis.IsPermissionError(err)
}

// background runs fn on Run's context, tracked so Run waits for it. It
// reports whether it started fn (not when Run is not running).
func (r *Runner) background(fn func(ctx context.Context)) bool {
	r.bgMu.Lock()
	ctx := r.bgCtx
	r.bgMu.Unlock()
	if ctx == nil || ctx.Err() != nil {
		return false
	}
	r.bg.Go(func() { fn(ctx) })
	return true
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
