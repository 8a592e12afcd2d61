package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/internal/lifecycle"
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
	// Leader reports whether the relay holds the leader lock.
	Leader bool
	// Published counts the messages JetStream acknowledged and the relay
	// checkpointed while this Relay led (re-publications after a retry
	// included).
	Published uint64
	// Position is the checkpoint: every record up to it is acknowledged.
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
// leader lock in PostgreSQL (NewPostgresCheckpoints), or where
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
// relay leads or stands by (Stats tells which, and its last error);
// ErrNotStarted before that; and once Run has returned, Run's error, or
// ErrStopped when Run returned nil. It suits a readiness probe.
func (r *Relay) Ready() error { return r.life.Ready() }

// Run relays until ctx ends, then returns nil. A Relay runs once.
//
// It first checks what no retry can fix, and returns an error at once
// when that fails: the connected server's version (an error matching
// natsevent.ErrUnsupported if the server lacks a feature the relay needs,
// see Features) and, for the PostgreSQL checkpoints, that the checkpoints
// table exists and may be written. It then stands by until it wins the
// leader lock and, while it leads, publishes the feed from its checkpoint.
// NATS and PostgreSQL failures are logged, recorded in Stats and retried
// after the backoff policy's delay (WithBackoffPolicy); a relay that loses
// its lock goes back to standing by. Only a PostgreSQL error that says the
// configuration is wrong (a missing table or schema, missing privileges, a
// refused login) ends Run with that error.
//
// Stopping: cancel ctx and wait for Run to return. The leader then writes
// its checkpoint and closes its lock's connection, so a standby takes over
// at once; a process that exits before Run returns leaves the lock to
// PostgreSQL's detection of the dead connection.
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

func (r *Relay) run(ctx context.Context) error {
	if c, ok := r.cps.(interface{ Close(context.Context) }); ok {
		// A standby's idle election connection.
		defer c.Close(context.WithoutCancel(ctx))
	}
	version, err := r.start(ctx)
	if err != nil {
		return err
	}
	r.log.Info("relay started", "server_version", version, "prefix", r.cfg.prefix)
	r.life.Up()
	defer r.observe()()

	retries := backoff.New(r.cfg.backoff)
	for {
		sess, err := r.elect(ctx)
		if err != nil {
			return err
		}
		r.setLeader(true)
		r.log.Info("relay is the leader")
		err = r.lead(ctx, sess, retries)
		r.setLeader(false)
		sess.Close(context.WithoutCancel(ctx))
		switch {
		case ctx.Err() != nil:
			r.log.Info("relay stopped")
			return nil
		case isConfigError(err):
			r.recordError(err)
			r.log.Error("relay stopped: no retry can fix this", "err", err)
			return err
		}
		r.recordError(err)
		r.log.Warn("relay stepped down", "err", err)
		if err := retries.Sleep(ctx); err != nil {
			return nil
		}
	}
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

// elect waits until the relay leads.
func (r *Relay) elect(ctx context.Context) (Leadership, error) {
	retries := backoff.New(r.cfg.backoff)
	standby := false
	for {
		l, err := r.cps.Lead(ctx, r.cfg.name)
		switch {
		case ctx.Err() != nil:
			if l != nil {
				l.Close(context.WithoutCancel(ctx))
			}
			return nil, ctx.Err()
		case isConfigError(err):
			return nil, err
		case err != nil:
			r.recordError(err)
			r.log.Warn("leader election failed", "err", err)
			if err := retries.Sleep(ctx); err != nil {
				return nil, err
			}
			continue
		case l != nil:
			return l, nil
		}
		retries.Reset()
		if !standby {
			standby = true
			r.log.Info("relay is standing by")
		}
		if err := backoff.Sleep(ctx, r.cfg.standbyInterval); err != nil {
			return nil, err
		}
	}
}

// lead publishes the feed while the relay holds the lock. It returns when
// ctx ends or the leadership fails; failures of publishing or of the feed
// are retried from the checkpoint, after retries' delay.
func (r *Relay) lead(ctx context.Context, s Leadership, retries *backoff.Backoff) error {
	pos, err := s.Load(ctx)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.stats.Position = pos
	r.mu.Unlock()
	r.log.Info("relaying from checkpoint", "position", pos.String())
	r.refreshLag(ctx, pos)

	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := newPump(ctx, r, s, pos, retries)
		retry, err := p.run()
		pos = p.saved
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.recordError(retry)
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
		return
	}
	if head.Seq > pos.Seq {
		r.stats.LagEvents = head.Seq - pos.Seq
	} else {
		r.stats.LagEvents = 1
	}
}

func (r *Relay) setLeader(on bool) {
	r.mu.Lock()
	r.stats.Leader = on
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
