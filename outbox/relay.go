package outbox

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/internal/backoff"
	"github.com/eskit/eskit/natsevent"
	"github.com/eskit/eskit/telemetry"
)

// Relay defaults.
const (
	DefaultSchema             = "eskit"
	DefaultName               = "outbox"
	DefaultBatchSize          = 1000
	DefaultMaxInFlight        = 512
	DefaultAckTimeout         = 5 * time.Second
	DefaultMinBackoff         = 50 * time.Millisecond
	DefaultMaxBackoff         = 5 * time.Second
	DefaultStandbyInterval    = 500 * time.Millisecond
	DefaultCheckInterval      = time.Second
	DefaultCheckpointInterval = 100 * time.Millisecond
)

// Polling bounds used when the feed gives no wake-ups.
const (
	minPoll = 5 * time.Millisecond
	maxPoll = 250 * time.Millisecond
)

// ErrAckTimeout reports a publish whose acknowledgement did not arrive in
// time.
var ErrAckTimeout = errors.New("outbox: publish acknowledgement timed out")

// ErrDisconnected reports that the NATS connection was not connected when
// the relay was about to publish.
var ErrDisconnected = errors.New("outbox: NATS connection is not connected")

// Subscriber is a feed that can tell when records after a Position appear
// (eventstore.Store is one). The relay uses it to wait for new events.
type Subscriber interface {
	Subscribe(ctx context.Context, after eventstore.Position) iter.Seq2[eventstore.Record, error]
}

// Option configures a Relay.
type Option func(*config)

type config struct {
	schema          string
	name            string
	prefix          string
	batchSize       int
	maxInFlight     int
	ackTimeout      time.Duration
	minBackoff      time.Duration
	maxBackoff      time.Duration
	standbyInterval time.Duration
	checkInterval   time.Duration
	saveInterval    time.Duration
	msgTTL          time.Duration
	wait            eventstore.WaitFunc
	checkpoints     Checkpoints
	logger          *slog.Logger
	telemetry       []telemetry.Option
}

// WithSchema sets the PostgreSQL schema of the checkpoints table (default
// DefaultSchema).
func WithSchema(schema string) Option { return func(c *config) { c.schema = schema } }

// WithName sets the relay's name: its checkpoint row and leader lock. Relays
// with the same name and schema elect one leader (default DefaultName).
func WithName(name string) Option { return func(c *config) { c.name = name } }

// WithPrefix sets the subject prefix (default natsevent.DefaultPrefix).
func WithPrefix(prefix string) Option { return func(c *config) { c.prefix = prefix } }

// WithBatchSize sets how many records one feed read and one checkpoint
// write cover (default DefaultBatchSize).
func WithBatchSize(n int) Option { return func(c *config) { c.batchSize = n } }

// WithMaxInFlight bounds the published but unacknowledged messages (default
// DefaultMaxInFlight).
func WithMaxInFlight(n int) Option { return func(c *config) { c.maxInFlight = n } }

// WithAckTimeout sets how long the relay waits for one acknowledgement
// before it treats the publish as failed (default DefaultAckTimeout).
func WithAckTimeout(d time.Duration) Option { return func(c *config) { c.ackTimeout = d } }

// WithBackoff sets the retry delays after errors: the first delay and the
// cap of its doubling (defaults DefaultMinBackoff, DefaultMaxBackoff).
func WithBackoff(minDelay, maxDelay time.Duration) Option {
	return func(c *config) { c.minBackoff, c.maxBackoff = minDelay, maxDelay }
}

// WithStandbyInterval sets how often a standby tries to take the leader
// lock (default DefaultStandbyInterval).
func WithStandbyInterval(d time.Duration) Option {
	return func(c *config) { c.standbyInterval = d }
}

// WithCheckInterval sets how often the leader refreshes its lag figures
// from the feed's head and, while it has no checkpoint to write, verifies
// its lock (default DefaultCheckInterval).
func WithCheckInterval(d time.Duration) Option { return func(c *config) { c.checkInterval = d } }

// WithCheckpointInterval sets how long acknowledged records may wait before
// the relay writes its checkpoint when fewer than a batch of them are
// pending (default DefaultCheckpointInterval). The relay also writes it after
// every batch-size acknowledgements and whenever it stops, steps down or
// retries after an error. A checkpoint not yet written only costs a
// successor re-publishing those records, which JetStream's duplicate window
// and idempotent consumers absorb; a longer interval means fewer writes.
func WithCheckpointInterval(d time.Duration) Option {
	return func(c *config) { c.saveInterval = d }
}

// WithMessageTTL sets a per-message TTL (the Nats-TTL header). It needs a
// 2.11 or newer server and a stream with AllowMsgTTL; Run refuses older
// servers.
func WithMessageTTL(d time.Duration) Option { return func(c *config) { c.msgTTL = d } }

// WithWaiter sets how the relay waits for new events once it has caught up.
// Without it the relay follows the feed with its Subscribe when it has one,
// and with short adaptive polling otherwise.
func WithWaiter(wait eventstore.WaitFunc) Option { return func(c *config) { c.wait = wait } }

// WithCheckpoints sets where the relay elects its leader and keeps its
// checkpoint, instead of PostgreSQL (NewRelay's pool may then be nil): for
// example a MemoryCheckpoints shared by the relays of one process.
func WithCheckpoints(c Checkpoints) Option { return func(cfg *config) { cfg.checkpoints = c } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

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
// may run: one leads, the others stand by. Create it with NewRelay.
type Relay struct {
	feed  eventstore.FeedReader
	sub   Subscriber // the feed's own subscription, nil if it has none
	cps   Checkpoints
	js    jetstream.JetStream
	cfg   config
	log   *slog.Logger
	pubOp []jetstream.PublishOpt
	tel   *relayTelemetry

	running atomic.Bool

	mu    sync.Mutex
	stats Stats
	since time.Time // RecordedAt of the oldest unpublished record, if known
}

// NewRelay returns a relay from feed to js that keeps its checkpoint and
// leader lock in pool's database (NewPostgresCheckpoints), or where
// WithCheckpoints says (pool may then be nil). If feed also implements
// Subscriber (as every eventstore.Store does), the relay follows the feed
// with it.
func NewRelay(feed eventstore.FeedReader, pool *pgxpool.Pool, js jetstream.JetStream, opts ...Option) (*Relay, error) {
	cfg := config{
		schema:          DefaultSchema,
		name:            DefaultName,
		prefix:          natsevent.DefaultPrefix,
		batchSize:       DefaultBatchSize,
		maxInFlight:     DefaultMaxInFlight,
		ackTimeout:      DefaultAckTimeout,
		minBackoff:      DefaultMinBackoff,
		maxBackoff:      DefaultMaxBackoff,
		standbyInterval: DefaultStandbyInterval,
		checkInterval:   DefaultCheckInterval,
		saveInterval:    DefaultCheckpointInterval,
	}
	for _, o := range opts {
		o(&cfg)
	}
	switch {
	case feed == nil || js == nil:
		return nil, errors.New("outbox: NewRelay needs a feed and a JetStream context")
	case pool == nil && cfg.checkpoints == nil:
		return nil, errors.New("outbox: NewRelay needs a pool, or checkpoints set with WithCheckpoints")
	case cfg.schema == "" || cfg.name == "":
		return nil, errors.New("outbox: relay schema and name must not be empty")
	case cfg.batchSize <= 0 || cfg.maxInFlight <= 0:
		return nil, errors.New("outbox: batch size and max in-flight must be positive")
	case cfg.ackTimeout <= 0 || cfg.standbyInterval <= 0 || cfg.checkInterval <= 0 || cfg.saveInterval <= 0:
		return nil, errors.New("outbox: ack timeout, standby, check and checkpoint intervals must be positive")
	case cfg.minBackoff <= 0 || cfg.maxBackoff < cfg.minBackoff:
		return nil, errors.New("outbox: backoff needs 0 < min <= max")
	case cfg.msgTTL < 0 || (cfg.msgTTL > 0 && cfg.msgTTL < time.Second):
		return nil, errors.New("outbox: message TTL must be at least one second")
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
	return r, nil
}

// Features returns the server features the relay's configuration needs.
func (r *Relay) Features() []natsevent.Feature {
	fs := []natsevent.Feature{natsevent.FeatureJetStream}
	if r.cfg.msgTTL > 0 {
		fs = append(fs, natsevent.FeatureMsgTTL)
	}
	return fs
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

// Run relays until ctx ends, then returns ctx's error. It first checks the
// connected server's version and returns an error matching natsevent.ErrUnsupported
// if the server lacks a feature the relay needs. It then stands by until it
// wins the leader lock and, while it leads, publishes the feed from its
// checkpoint. NATS and PostgreSQL failures are logged and retried with
// backoff; a relay that loses its lock goes back to standing by. Run must
// not be called again while it runs.
func (r *Relay) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("outbox: relay is already running")
	}
	defer r.running.Store(false)

	version, err := natsevent.ConnectedVersion(ctx, r.js)
	if err != nil {
		return err
	}
	if err := natsevent.CheckServer(version, r.Features()...); err != nil {
		return err
	}
	if nc := r.js.Conn(); nc.Opts.ReconnectBufSize != -1 {
		r.log.Warn("the NATS connection buffers publishes while reconnecting; set nats.ReconnectBufSize(-1) so that a reconnect cannot reorder retried messages")
	}
	r.log.Info("relay started", "server_version", version, "prefix", r.cfg.prefix)
	defer r.observe()()
	if c, ok := r.cps.(interface{ Close(context.Context) }); ok {
		// A standby's idle election connection.
		defer c.Close(context.WithoutCancel(ctx))
	}

	bo := backoff.New(r.cfg.minBackoff, r.cfg.maxBackoff)
	for {
		sess, err := r.elect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		r.setLeader(true)
		r.log.Info("relay is the leader")
		err = r.lead(ctx, sess)
		r.setLeader(false)
		sess.Close(context.WithoutCancel(ctx))
		if ctx.Err() != nil {
			r.log.Info("relay stopped")
			return ctx.Err()
		}
		r.recordError(err)
		r.log.Warn("relay stepped down", "err", err)
		if err := bo.Sleep(ctx); err != nil {
			return err
		}
	}
}

// elect waits until the relay leads.
func (r *Relay) elect(ctx context.Context) (Leadership, error) {
	bo := backoff.New(r.cfg.minBackoff, r.cfg.maxBackoff)
	standby := false
	for {
		l, err := r.cps.Lead(ctx, r.cfg.name)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			r.recordError(err)
			r.log.Warn("leader election failed", "err", err)
			if err := bo.Sleep(ctx); err != nil {
				return nil, err
			}
			continue
		case l != nil:
			return l, nil
		}
		bo.Reset()
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
// ctx ends or the session fails.
func (r *Relay) lead(ctx context.Context, s Leadership) error {
	pos, err := s.Load(ctx)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.stats.Position = pos
	r.mu.Unlock()
	r.log.Info("relaying from checkpoint", "position", pos.String())
	r.refreshLag(ctx, pos)

	bo := backoff.New(r.cfg.minBackoff, r.cfg.maxBackoff)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		retry, err := r.pump(ctx, s, &pos, bo)
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.recordError(retry)
		r.log.Warn("relaying failed; retrying from the checkpoint", "err", retry, "position", pos.String())
		if err := bo.Sleep(ctx); err != nil {
			return err
		}
		if err := s.Check(ctx); err != nil {
			return err
		}
	}
}

// inflight is a published, not yet acknowledged record.
type inflight struct {
	pos      eventstore.Position
	recorded time.Time
	future   jetstream.PubAckFuture
	sent     time.Time
	span     trace.Span // publish span, nil when the record is not traced
}

// feedItem is one record of the followed feed, or the error that ended it.
type feedItem struct {
	rec eventstore.Record
	err error
}

// errFeedEnded reports a feed subscription that ended on its own.
var errFeedEnded = errors.New("outbox: feed subscription ended")

// follow reads the feed after the given Position in a goroutine and hands
// its records over, in feed order, on the returned channel, which is closed
// after an error or once ctx ends. It keeps up to a batch of records ready
// ahead of the publisher. The goroutine has returned once the channel is
// closed.
func (r *Relay) follow(ctx context.Context, after eventstore.Position) <-chan feedItem {
	ch := make(chan feedItem, r.cfg.batchSize)
	var seq iter.Seq2[eventstore.Record, error]
	switch {
	case r.cfg.wait != nil:
		seq = eventstore.CatchUp(ctx, r.feed, after, r.cfg.batchSize, r.cfg.wait)
	case r.sub != nil:
		seq = r.sub.Subscribe(ctx, after)
	default:
		seq = eventstore.CatchUp(ctx, r.feed, after, r.cfg.batchSize, pollWaiter())
	}
	go func() {
		defer close(ch)
		for rec, err := range seq {
			select {
			case ch <- feedItem{rec: rec, err: err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
		if ctx.Err() == nil {
			select {
			case ch <- feedItem{err: errFeedEnded}:
			case <-ctx.Done():
			}
		}
	}()
	return ch
}

// pollWaiter is the waiter of feeds that give no wake-ups: short adaptive
// polling, from minPoll doubling to maxPoll while nothing new appears.
func pollWaiter() eventstore.WaitFunc {
	var (
		last  eventstore.Position
		delay time.Duration
	)
	return func(ctx context.Context, after eventstore.Position) error {
		if after != last || delay == 0 {
			last, delay = after, minPoll
		} else {
			delay = min(delay*2, maxPoll)
		}
		return backoff.Sleep(ctx, delay)
	}
}

// pump relays the feed from *pos until a publish or feed failure (returned
// as retry, after the acknowledged prefix is checkpointed and *pos moved to
// it) or until the session fails or ctx ends (returned as err). A reader
// goroutine follows the feed, so reads, publishes, acknowledgements and
// checkpoint writes overlap: up to max in-flight records are unacknowledged
// at any time, and the relay blocks only when it has nothing to publish and
// nothing to collect. The checkpoint moves only past an unbroken prefix of
// acknowledged records: after every batch-size acknowledgements, once the
// checkpoint interval has passed since the last write, and before pump
// returns. While nothing is left to checkpoint, the relay verifies its lock
// every check interval; it refreshes its lag figures at that interval too.
func (r *Relay) pump(ctx context.Context, s Leadership, pos *eventstore.Position, bo *backoff.Backoff) (retry, err error) {
	nc := r.js.Conn()
	window := r.cfg.maxInFlight
	fctx, stopFeed := context.WithCancel(ctx)
	in := r.follow(fctx, *pos)
	var (
		queue    = make([]inflight, 0, window)
		head     int // queue[head:] are outstanding
		acked    = *pos
		ackedAt  time.Time
		unsaved  int
		lastSave = time.Now() // the last checkpoint write or lock check
		lastLag  = time.Now() // the last lag refresh
		timer    = time.NewTimer(time.Hour)
	)
	defer func() {
		timer.Stop()
		stopFeed()
		for range in { // wait for the reader to return
		}
		cause := retry
		if cause == nil {
			cause = err
		}
		if cause == nil {
			cause = errPublishAbandoned
		}
		for _, f := range queue[head:] {
			endPublish(f.span, cause)
		}
	}()
	save := func() error {
		if unsaved == 0 {
			return nil
		}
		// Checkpoint what is acknowledged even when ctx has just ended, so
		// that a stopped relay's successor re-publishes as little as possible.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.ackTimeout)
		err := s.Save(sctx, acked)
		cancel()
		if err != nil {
			return err
		}
		*pos = acked
		lastSave = time.Now()
		bo.Reset()
		var oldest time.Time
		idle := false
		switch {
		case head < len(queue):
			oldest = queue[head].recorded
		case len(in) > 0:
			oldest = ackedAt
		default:
			// Nothing read is unpublished: the lag is what the reader
			// has not seen yet, which the next refresh measures.
			idle = true
		}
		r.tel.published.Add(ctx, int64(unsaved), r.tel.set)
		r.mu.Lock()
		r.stats.Published += uint64(unsaved)
		r.stats.Position = acked
		if r.stats.LagEvents > uint64(unsaved) && !idle {
			r.stats.LagEvents -= uint64(unsaved)
		} else {
			r.stats.LagEvents = 0
		}
		r.since = oldest
		r.mu.Unlock()
		unsaved = 0
		return nil
	}
	// fail checkpoints the acknowledged prefix and reports cause for retry.
	fail := func(cause error) (error, error) {
		if err := save(); err != nil {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return cause, nil
	}
	// pop takes the oldest outstanding record as acknowledged.
	pop := func() {
		f := queue[head]
		endPublish(f.span, nil)
		queue[head] = inflight{}
		head++
		acked, ackedAt = f.pos, f.recorded
		unsaved++
		if head == len(queue) {
			queue, head = queue[:0], 0
		}
	}
	// prev is the event ID of the record published before, in feed order.
	// Each message expects it as the stream's last message ID, so when the
	// server refuses a message (a limit, a stream leader change), every
	// message after it is refused too, and the retry from the checkpoint
	// stores them in order: JetStream never holds a record before one that
	// precedes it in the feed. The first message of a pump carries no
	// expectation: everything before it is acknowledged.
	var prev string
	publish := func(rec *eventstore.Record) error {
		if !nc.IsConnected() {
			return ErrDisconnected
		}
		msg := natsevent.NewMsg(r.cfg.prefix, *rec)
		if r.cfg.msgTTL > 0 {
			msg.Header[natsevent.HeaderTTL] = []string{fmt.Sprintf("%ds", int64(r.cfg.msgTTL/time.Second))}
		}
		if prev != "" {
			msg.Header[jetstream.ExpectedLastMsgIDHeader] = []string{prev}
		}
		prev = rec.ID.String()
		span := r.tel.startPublish(ctx, rec, msg)
		f, err := r.js.PublishMsgAsync(msg, r.pubOp...)
		if err != nil {
			err = fmt.Errorf("outbox: publish: %w", err)
			endPublish(span, err)
			return err
		}
		queue = append(queue, inflight{pos: rec.Position, recorded: rec.RecordedAt, future: f, sent: time.Now(), span: span})
		return nil
	}
	// take publishes a record (or reports the error) the reader handed
	// over; ok is false when the reader has stopped.
	take := func(it feedItem, ok bool) error {
		switch {
		case !ok:
			return errFeedEnded
		case it.err != nil:
			return fmt.Errorf("outbox: read feed: %w", it.err)
		}
		return publish(&it.rec)
	}

	for {
		// Publish what the reader has ready while the window has room, and
		// collect the acknowledgements that have arrived, without blocking.
		busy := false
	publishing:
		for len(queue)-head < window {
			select {
			case it, ok := <-in:
				if err := take(it, ok); err != nil {
					return fail(err)
				}
				busy = true
			default:
				break publishing
			}
		}
	collecting:
		for head < len(queue) {
			f := queue[head].future
			select {
			case <-f.Ok():
				pop()
				busy = true
			case err := <-f.Err():
				return fail(fmt.Errorf("outbox: publish: %w", err))
			default:
				break collecting
			}
		}
		now := time.Now()
		if unsaved >= r.cfg.batchSize || (unsaved > 0 && now.Sub(lastSave) >= r.cfg.saveInterval) {
			if err := save(); err != nil {
				return nil, err
			}
		}
		if now.Sub(lastLag) >= r.cfg.checkInterval {
			if unsaved == 0 && now.Sub(lastSave) >= r.cfg.checkInterval {
				if err := s.Check(ctx); err != nil {
					if ctx.Err() != nil {
						return nil, ctx.Err()
					}
					return nil, err
				}
				lastSave = time.Now()
			}
			r.refreshLag(ctx, *pos)
			lastLag = time.Now()
		}
		if busy {
			continue
		}

		// Nothing to do at once: block until a record, an acknowledgement,
		// a deadline or the end of ctx.
		var (
			recv  <-chan feedItem
			okCh  <-chan *jetstream.PubAck
			errCh <-chan error
		)
		deadline := lastLag.Add(r.cfg.checkInterval)
		if unsaved > 0 {
			deadline = earliest(deadline, lastSave.Add(r.cfg.saveInterval))
		}
		if len(queue)-head < window {
			recv = in
		}
		if head < len(queue) {
			f := queue[head]
			if time.Since(f.sent) >= r.cfg.ackTimeout {
				return fail(ErrAckTimeout)
			}
			okCh, errCh = f.future.Ok(), f.future.Err()
			deadline = earliest(deadline, f.sent.Add(r.cfg.ackTimeout))
		}
		timer.Reset(max(time.Until(deadline), 0))
		select {
		case it, ok := <-recv:
			if err := take(it, ok); err != nil {
				return fail(err)
			}
		case <-okCh:
			pop()
		case err := <-errCh:
			return fail(fmt.Errorf("outbox: publish: %w", err))
		case <-timer.C:
		case <-ctx.Done():
			return fail(ctx.Err())
		}
		timer.Stop()
	}
}

// earliest returns the earlier of two times.
func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
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
