package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/internal/lifecycle"
	"github.com/eskit/eskit/lease"
	"github.com/eskit/eskit/natsevent"
	"github.com/eskit/eskit/telemetry"
)

// ErrAckTimeout reports a publish whose acknowledgement did not arrive in
// time.
var ErrAckTimeout = errors.New("outbox: publish acknowledgement timed out")

// ErrDisconnected reports that the NATS connection was not connected when
// the relay was about to publish.
var ErrDisconnected = errors.New("outbox: NATS connection is not connected")

// Errors Relay.Ready returns while Run does not run. They are the same
// values as projection.ErrNotStarted and projection.ErrStopped.
var (
	// ErrNotStarted: Run has not been called or has not passed its
	// start-up checks yet.
	ErrNotStarted = lifecycle.ErrNotStarted
	// ErrStopped: Run has returned nil (its context ended).
	ErrStopped = lifecycle.ErrStopped
)

// Stats is a snapshot of a relay's progress.
type Stats struct {
	// Leader reports whether this relay holds the lease, so leads: only
	// the leader publishes.
	Leader bool
	// Lease is this relay's lease while it leads; while it stands by, the
	// leader's lease as last read from the lease store (every check
	// interval), the zero Lease when none leads.
	Lease lease.Lease
	// LeaderProgressAt is when the leader last advanced: its checkpoint
	// moved, or it found itself caught up with the feed. While this relay
	// stands by it is when the leader's checkpoint was last written, as
	// last read (zero when unknown): a standby tells a stalled leader by
	// a LagEvents above zero with an old LeaderProgressAt.
	LeaderProgressAt time.Time
	// Published counts the messages JetStream acknowledged and the relay
	// checkpointed while this Relay led (re-publications after a retry
	// included).
	Published uint64
	// Position is the checkpoint: every record up to it is acknowledged
	// (while standing by, the leader's checkpoint as last read).
	Position eventstore.Position
	// LagEvents approximates how many records the checkpoint trails the
	// store's head by (from the feed's sequence numbers).
	LagEvents uint64
	// Lag is how long the oldest unpublished record has waited (an upper
	// bound); zero when caught up.
	Lag time.Duration
	// LastError is the most recent error (nil if none yet).
	LastError error
	// LastErrorAt is when LastError happened.
	LastErrorAt time.Time
}

// Relay publishes the store's feed to JetStream, in feed order, and records
// its progress in a Postgres checkpoint. Several relays with the same name
// may run: one leads, the others stand by. Create it with NewRelay, run it
// with Run; Started, Ready and Done tell how Run is doing.
type Relay struct {
	feed  eventstore.FeedReader
	sub   Subscriber // the feed's own subscription, nil if it has none
	cps   Checkpoints
	js    jetstream.JetStream
	cfg   config
	log   *slog.Logger
	pubOp []jetstream.PublishOpt
	// ttlHeader is the Nats-TTL header value of WithMessageTTL, nil
	// without it; shared by every message (nothing modifies it).
	ttlHeader []string
	tel       *relayTelemetry
	life      lifecycle.State
	keeper    *lease.Keeper

	mu    sync.Mutex
	stats Stats
	since time.Time // RecordedAt of the oldest unpublished record, if known
}

// pgFeed is what a *pgstore.Store tells about where it lives.
type pgFeed interface {
	Pool() *pgxpool.Pool
	Schema() string
}

// NewRelay returns a relay from feed to js that keeps its checkpoint and
// lease in PostgreSQL (NewPostgresCheckpoints), or where
// WithCheckpoints says.
//
// When feed is a *pgstore.Store, the relay takes the database and the
// schema from it: pool may be nil, and WithSchema is only needed to keep
// the checkpoints elsewhere. Otherwise pool is the checkpoints' database
// (nil with WithCheckpoints) and the schema DefaultSchema unless WithSchema
// says. If feed also implements Subscriber (as every eventstore.Store
// does), the relay follows the feed with it.
func NewRelay(feed eventstore.FeedReader, pool *pgxpool.Pool, js jetstream.JetStream, opts ...Option) (*Relay, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if pf, ok := feed.(pgFeed); ok {
		if pool == nil {
			pool = pf.Pool()
		}
		if cfg.schema == "" {
			cfg.schema = pf.Schema()
		}
	}
	if cfg.schema == "" {
		cfg.schema = DefaultSchema
	}
	switch {
	case feed == nil || js == nil:
		return nil, errors.New("outbox: NewRelay needs a feed and a JetStream context")
	case pool == nil && cfg.checkpoints == nil:
		return nil, errors.New("outbox: NewRelay needs a pool (or a *pgstore.Store as the feed), or checkpoints set with WithCheckpoints")
	case cfg.name == "":
		return nil, errors.New("outbox: relay name must not be empty")
	case cfg.batchSize <= 0 || cfg.maxInFlight <= 0:
		return nil, errors.New("outbox: batch size and max in-flight must be positive")
	case cfg.ackTimeout <= 0 || cfg.standbyInterval <= 0 || cfg.checkInterval <= 0 || cfg.saveInterval <= 0:
		return nil, errors.New("outbox: ack timeout, standby, check and checkpoint intervals must be positive")
	case cfg.leaseTTL < lease.MinTTL || cfg.leaseTTL > lease.MaxTTL:
		return nil, fmt.Errorf("outbox: lease TTL %s: want %s to %s", cfg.leaseTTL, lease.MinTTL, lease.MaxTTL)
	case cfg.msgTTL < 0 || (cfg.msgTTL > 0 && cfg.msgTTL < time.Second):
		return nil, errors.New("outbox: message TTL must be at least one second")
	}
	if err := cfg.backoff.Validate(); err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	if err := natsevent.ValidatePrefix(cfg.prefix); err != nil {
		return nil, err
	}
	if cfg.logger == nil {
		cfg.logger = slog.Default()
	}
	sub, _ := feed.(Subscriber)
	r := &Relay{
		feed: feed,
		sub:  sub,
		cps:  cfg.checkpoints,
		js:   js,
		cfg:  cfg,
		log:  cfg.logger.With("relay", cfg.name, "schema", cfg.schema),
		// The client's own retry of a publish that found no responders would
		// re-send it after later messages: the relay retries from its
		// checkpoint instead.
		pubOp: []jetstream.PublishOpt{jetstream.WithRetryAttempts(0)},
		tel:   newRelayTelemetry(telemetry.NewConfig(cfg.telemetry...), cfg.name),
	}
	if r.cps == nil {
		r.cps = NewPostgresCheckpoints(pool, cfg.schema)
	}
	keeper, err := lease.NewKeeper(r.cps.Leases(), LeaseName(cfg.name), lease.WithTTL(cfg.leaseTTL),
		lease.WithRetryInterval(cfg.standbyInterval), lease.WithLogger(r.log),
		lease.WithHooks(lease.Hooks{Lost: r.lostLease}))
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	r.keeper = keeper
	if cfg.msgTTL > 0 {
		r.ttlHeader = []string{fmt.Sprintf("%ds", int64(cfg.msgTTL/time.Second))}
	}
	return r, nil
}

// Features returns the server features the relay's configuration needs
// (WithMessageTTL, WithRequiredFeatures); Run refuses a server that lacks
// one.
func (r *Relay) Features() []natsevent.Feature {
	fs := []natsevent.Feature{natsevent.FeatureJetStream}
	if r.cfg.msgTTL > 0 {
		fs = append(fs, natsevent.FeatureMsgTTL)
	}
	return append(fs, r.cfg.features...)
}

// Stats returns a snapshot of the relay's progress.
func (r *Relay) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	if s.LagEvents > 0 && !r.since.IsZero() {
		s.Lag = max(time.Since(r.since), 0)
	}
	return s
}

// Started returns a channel closed once Run has passed its start-up checks
// (the relay then stands by or leads), or has returned; Ready tells which.
func (r *Relay) Started() <-chan struct{} { return r.life.Started() }

// Done returns a channel closed once Run has returned.
func (r *Relay) Done() <-chan struct{} { return r.life.Done() }

// Ready returns nil while Run runs past its start-up checks, whether the
// relay leads or stands by; ErrNotStarted before that; and once Run has
// returned, Run's error, or ErrStopped when Run returned nil. It suits a
// readiness probe: it says that this process is up and will take over
// within the lease TTL when the leader goes, not that the relaying
// advances. Which relay leads and whether it advances are in Stats
// (Leader, Lease, LeaderProgressAt, LagEvents) and the metrics (see
// WithTelemetry), for a liveness check or an alert.
func (r *Relay) Ready() error { return r.life.Ready() }

// Run relays until ctx ends, then returns nil. A Relay runs once.
//
// It first checks what no retry can fix, and returns an error at once
// when that fails: the connected server's version (an error matching
// natsevent.ErrUnsupported if the server lacks a feature the relay needs,
// see Features) and, for the PostgreSQL checkpoints, that the checkpoints
// and leases tables exist and may be written. It then stands by until it
// holds the relay's lease (package lease, LeaseName), and while it holds
// it, publishes the feed from its checkpoint. The lease is renewed in the
// background; when it is lost (taken over, expired, or its holder's own
// deadline passed, as after a freeze), publishing stops at once and every
// checkpoint write of the deposed leader is refused (ErrNotLeader).
// NATS and PostgreSQL failures are logged, recorded in Stats and retried
// after the backoff policy's delay (WithBackoffPolicy); a leader that has
// failed to publish for longer than the lease TTL releases its lease and
// stands by for about a TTL, so that a standby that can reach NATS takes
// over. Only a PostgreSQL error that says the configuration is wrong (a
// missing table or schema, missing privileges, a refused login) ends Run
// with that error.
//
// Stopping: cancel ctx and wait for Run to return. The leader then writes
// its checkpoint and releases its lease, so a standby takes over at once;
// a process that exits (or freezes) before that leaves the lease to
// expire: a standby takes over within the lease TTL (WithLeaseTTL).
func (r *Relay) Run(ctx context.Context) error {
	if err := r.life.Begin(); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	err := r.run(ctx)
	if ctx.Err() != nil {
		err = nil
	}
	return r.life.End(err)
}

// errStepDown ends a leadership whose publishing has failed for longer
// than the lease TTL.
var errStepDown = errors.New("outbox: publishing has failed for longer than the lease TTL; stepping down")

func (r *Relay) run(ctx context.Context) error {
	version, err := r.start(ctx)
	if err != nil {
		return err
	}
	r.log.Info("relay started", "server_version", version, "prefix", r.cfg.prefix,
		"lease", r.keeper.Name(), "holder", r.keeper.Holder(), "lease_ttl", r.keeper.TTL())
	r.life.Up()
	defer r.observe()()

	retries := backoff.New(r.cfg.backoff)
	for {
		h, release, err := r.elect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		r.setLeader(h.Lease())
		r.log.Info("relay is the leader", "token", h.Token())
		err = r.leadHeld(ctx, h, retries)
		r.setLeader(lease.Lease{})
		lost := h.Err()
		release()
		switch {
		case ctx.Err() != nil:
			r.log.Info("relay stopped")
			return nil
		case isConfigError(err):
			r.recordError(err)
			r.log.Error("relay stopped: no retry can fix this", "err", err)
			return err
		case errors.Is(err, errStepDown):
			r.recordError(err)
			// Stand by for about a TTL, so that a standby takes over.
			wait := r.keeper.TTL() + time.Duration(rand.Int64N(int64(r.keeper.TTL()/2)+1))
			r.log.Warn("relay stepped down: it cannot publish; standing by", "err", err, "for", wait)
			if err := backoff.Sleep(ctx, wait); err != nil {
				return nil
			}
			continue
		case lost != nil:
			r.recordError(lost)
			r.log.Warn("relay lost its lease; standing by", "err", lost)
			continue
		}
		r.recordError(err)
		r.log.Warn("relay stepped down", "err", err)
		if err := retries.Sleep(ctx); err != nil {
			return nil
		}
	}
}

// leadHeld relays while h holds, on a context that ends when ctx ends or
// the lease is lost.
func (r *Relay) leadHeld(ctx context.Context, h *lease.Held, retries *backoff.Backoff) error {
	lctx, cancel := context.WithCancelCause(h.Context())
	defer cancel(nil)
	stop := context.AfterFunc(ctx, func() { cancel(context.Cause(ctx)) })
	defer stop()
	s, err := r.cps.Lead(lctx, r.cfg.name, h)
	if err != nil {
		return err
	}
	defer s.Close(context.WithoutCancel(ctx))
	return r.lead(lctx, h, s, retries)
}

// start runs the start-up checks and returns the server's version.
func (r *Relay) start(ctx context.Context) (string, error) {
	version := r.cfg.serverVersion
	if version == "" {
		v, err := natsevent.ConnectedVersion(ctx, r.js)
		if err != nil {
			return "", err
		}
		version = v
	}
	if err := natsevent.CheckServer(version, r.Features()...); err != nil {
		return "", err
	}
	if nc := r.js.Conn(); nc.Opts.ReconnectBufSize != -1 {
		r.log.Warn("the NATS connection buffers publishes while reconnecting; set nats.ReconnectBufSize(-1) so that a reconnect cannot reorder retried messages")
	}
	v, ok := r.cps.(interface{ Verify(context.Context) error })
	if !ok {
		return version, nil
	}
	err := backoff.Retry(ctx, r.cfg.backoff, func(ctx context.Context, attempt int) error {
		err := v.Verify(ctx)
		switch {
		case err == nil:
			return nil
		case isConfigError(err):
			return backoff.Stop(err)
		}
		r.recordError(err)
		r.log.Warn("relay cannot check its checkpoints yet; retrying", "err", err, "attempt", attempt)
		return err
	})
	return version, err
}

// elect stands by until the relay holds its lease; release gives it back
// and waits for that. While it stands by, it reads the leader's lease and
// progress into Stats every check interval.
func (r *Relay) elect(ctx context.Context) (h *lease.Held, release func(), err error) {
	// The held lease outlives ctx until release, so that a stopping
	// leader still writes its last checkpoint under it.
	life, cancelLife := context.WithCancel(context.WithoutCancel(ctx))
	stopLife := context.AfterFunc(ctx, cancelLife)
	watch, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		r.watchLeader(watch)
	}()
	h, err = r.keeper.Hold(life)
	stopWatch()
	<-watched
	if !stopLife() || err != nil {
		cancelLife()
		if h != nil {
			_ = h.Release(context.WithoutCancel(ctx))
		}
		if err == nil {
			err = ctx.Err()
		}
		return nil, nil, err
	}
	return h, func() {
		_ = h.Release(context.WithoutCancel(ctx)) // reported by the Keeper's log
		cancelLife()
	}, nil
}

// watchLeader reads, every check interval until ctx ends, the leader's
// lease and progress into Stats.
func (r *Relay) watchLeader(ctx context.Context) {
	pr, _ := r.cps.(progressReader)
	for {
		cur, ok, err := r.cps.Leases().Current(ctx, r.keeper.Name())
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			if !ok {
				cur = lease.Lease{}
			}
			r.mu.Lock()
			if !r.stats.Leader {
				r.stats.Lease = cur
			}
			r.mu.Unlock()
		}
		if pr != nil {
			pos, at, has, err := pr.progress(ctx, r.cfg.name)
			if err == nil && has {
				r.mu.Lock()
				if !r.stats.Leader {
					r.stats.Position, r.stats.LeaderProgressAt = pos, at
				}
				r.mu.Unlock()
				r.refreshLag(ctx, pos)
			}
		}
		if backoff.Sleep(ctx, r.cfg.checkInterval) != nil {
			return
		}
	}
}

// lead publishes the feed while the relay holds its lease h (ctx ends
// when it is lost). It returns when ctx ends, the leadership fails, or
// publishing has failed for longer than the lease TTL (errStepDown);
// failures of publishing or of the feed are retried from the checkpoint,
// after retries' delay.
func (r *Relay) lead(ctx context.Context, h *lease.Held, s Leadership, retries *backoff.Backoff) error {
	pos, err := s.Load(ctx)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.stats.Position = pos
	r.mu.Unlock()
	r.log.Info("relaying from checkpoint", "position", pos.String())
	r.refreshLag(ctx, pos)

	var failingSince time.Time
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := newPump(ctx, r, h, s, pos, retries)
		retry, err := p.run()
		progressed := p.saved != pos
		pos = p.saved
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.recordError(retry)
		now := time.Now()
		if progressed || failingSince.IsZero() {
			failingSince = now
		}
		if now.Sub(failingSince) > r.keeper.TTL() {
			return fmt.Errorf("%w: %w", errStepDown, retry)
		}
		r.log.Warn("relaying failed; retrying from the checkpoint", "err", retry, "position", pos.String())
		if err := retries.Sleep(ctx); err != nil {
			return err
		}
		if err := s.Check(ctx); err != nil {
			return err
		}
	}
}

// refreshLag recomputes the event lag from the feed's head.
func (r *Relay) refreshLag(ctx context.Context, pos eventstore.Position) {
	head, err := r.feed.Head(ctx)
	if err != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !head.After(pos) {
		r.stats.LagEvents = 0
		r.since = time.Time{}
		if r.stats.Leader {
			r.stats.LeaderProgressAt = time.Now() // caught up
		}
		return
	}
	if head.Seq > pos.Seq {
		r.stats.LagEvents = head.Seq - pos.Seq
	} else {
		r.stats.LagEvents = 1
	}
}

// setLeader records the relay's own lease (the zero Lease: it stands by).
// lostLease clears the leadership when the lease lost is the one the
// stats show: the hook runs on the keeper's own goroutine and may come
// after the relay has won a newer lease, which it must not hide.
func (r *Relay) lostLease(l lease.Lease, _ error) {
	r.mu.Lock()
	if r.stats.Lease.Token == l.Token {
		r.stats.Leader = false
		r.stats.Lease = lease.Lease{}
	}
	r.mu.Unlock()
}

func (r *Relay) setLeader(l lease.Lease) {
	r.mu.Lock()
	r.stats.Leader = l.Token != 0
	r.stats.Lease = l
	r.mu.Unlock()
}

func (r *Relay) recordError(err error) {
	if err == nil {
		return
	}
	r.mu.Lock()
	r.stats.LastError = err
	r.stats.LastErrorAt = time.Now()
	r.mu.Unlock()
}
