package projection

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/eventstore"
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
	// DefaultHeartbeat is the idle heartbeat the live side asks the server
	// for: a consumer whose server went away is noticed within two of them.
	DefaultHeartbeat = 2 * time.Second
	// DefaultLeaseTTL is how long a lease lasts without renewal: a standby
	// takes over at most this long after the active runner died.
	DefaultLeaseTTL = 5 * time.Second
	// DefaultVerifyInterval is how often the live side compares what it
	// applied with the store's feed (see WithVerifyInterval).
	DefaultVerifyInterval = time.Second
	// DefaultAttempts is how many times a record is applied before it is
	// parked.
	DefaultAttempts = 3
	// DefaultMinBackoff and DefaultMaxBackoff bound the pause between
	// attempts of a failing record, and between restarts of a partition
	// after errors (see DefaultBackoff).
	DefaultMinBackoff = 10 * time.Millisecond
	// DefaultMaxBackoff: see DefaultMinBackoff.
	DefaultMaxBackoff = 1 * time.Second
	// DefaultConsumerPrefix starts the durable consumer names of the live
	// side (see ConsumerName) of a runner on Redis; a runner on PostgreSQL
	// starts them with DefaultPostgresConsumerPrefix, so that runners of
	// the same projections on both targets (a move from one to the other)
	// do not share, and split, one consumer's messages.
	DefaultConsumerPrefix = "eskit-projection"
	// DefaultPostgresConsumerPrefix: see DefaultConsumerPrefix.
	DefaultPostgresConsumerPrefix = "eskit-projection-pg"
)

// BackoffPolicy is the retry schedule of eskit's long-running parts: after
// the n-th failure in a row a part waits Initial·Multiplierⁿ⁻¹ (Multiplier
// 2 when zero), capped at Max, of which the fraction Jitter (0 to 1) is
// random. It is the same type as outbox.BackoffPolicy.
type BackoffPolicy = backoff.Policy

// DefaultBackoff is the runner's retry schedule: 10 ms doubling up to 1 s,
// with a fifth of each delay random.
var DefaultBackoff = BackoffPolicy{Initial: DefaultMinBackoff, Max: DefaultMaxBackoff, Multiplier: 2, Jitter: 0.2}

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
	heartbeat      time.Duration
	leaseTTL       time.Duration
	renewEvery     time.Duration
	verifyEvery    time.Duration
	attempts       int
	backoff        BackoffPolicy
	poll           time.Duration
	wait           eventstore.WaitFunc
	logger         *slog.Logger
	owner          string
	concurrency    int
	telemetry      []telemetry.Option

	// Hooks for tests (see export_test.go).
	beforeCommit func(ctx context.Context, name string)
	keepLease    bool
}

func defaultConfig() config {
	return config{
		batchSize:   DefaultBatchSize,
		maxWait:     DefaultMaxWait,
		ackWait:     DefaultAckWait,
		heartbeat:   DefaultHeartbeat,
		leaseTTL:    DefaultLeaseTTL,
		verifyEvery: DefaultVerifyInterval,
		attempts:    DefaultAttempts,
		backoff:     DefaultBackoff,
		poll:        DefaultPollInterval,
	}
}

// WithPrefix sets the prefix of every key the runner writes (default none):
// the deployment's one word, such as "bank", the same the relay's subjects
// start with (outbox.WithPrefix). The runner separates it from the keys
// with ':' ("bank:{accounts}:meta"); a prefix that already ends with a
// separator ("bank:", "bank/") is used as it is. KeyPrefix tells the
// result; readers (NewReader) and the CLI's -prefix take the same word.
func WithPrefix(prefix string) Option { return func(c *config) { c.prefix = prefix } }

// WithJetStream makes the runner follow live events from durable pull
// consumers (one per projection partition) on the given stream, the one
// the outbox relay publishes to: natsevent.StreamName of the relay's
// prefix. Without it, the runner follows the store's feed.
func WithJetStream(js jetstream.JetStream, stream string) Option {
	return func(c *config) { c.js, c.stream = js, stream }
}

// WithFilterSubject restricts the live consumers to a subject filter (for
// example "<prefix>.>" of the relay, or natsevent.CategoryFilter); by default
// they see the whole stream.
func WithFilterSubject(filter string) Option { return func(c *config) { c.filter = filter } }

// WithConsumerPrefix sets the prefix of the durable consumer names
// (DefaultConsumerPrefix, or DefaultPostgresConsumerPrefix on a
// PostgreSQL target, by default). Runners of the same projections into
// different read-model stores, following one stream, need different
// prefixes.
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

// WithHeartbeat sets the idle heartbeat of the live side's pull requests
// (DefaultHeartbeat): when two are missed, the consumer is re-created on
// another connection, so a lost NATS node stalls a partition for seconds.
func WithHeartbeat(d time.Duration) Option { return func(c *config) { c.heartbeat = d } }

// WithLease sets the leases' time to live and how often the runner renews
// the leases it holds (and looks for free partitions). renew must be below
// ttl; zero means ttl/3.
func WithLease(ttl, renew time.Duration) Option {
	return func(c *config) { c.leaseTTL, c.renewEvery = ttl, renew }
}

// WithVerifyInterval sets how often a partition that follows the broker
// compares what it applied with the store's feed (DefaultVerifyInterval).
// Duplicates, reordering and holes inside a stream are handled on
// delivery, from per-stream versions; the verification finds what the
// broker never delivered at all (a stream's last event lost, say) and
// applies it from the store. It also runs at once after a message that
// cannot be decoded.
func WithVerifyInterval(d time.Duration) Option { return func(c *config) { c.verifyEvery = d } }

// WithConcurrency sets how many partitions the runner applies at the same
// time (default: every partition it holds).
func WithConcurrency(n int) Option { return func(c *config) { c.concurrency = n } }

// WithAttempts sets how many times a failing record is applied before it
// is parked (DefaultAttempts).
func WithAttempts(n int) Option { return func(c *config) { c.attempts = n } }

// WithBackoffPolicy sets how long the runner waits before it retries after
// a failure: between attempts of a failing record (WithAttempts bounds
// them), and before it restarts a partition whose session failed (Redis,
// NATS or the store unreachable) (default DefaultBackoff).
func WithBackoffPolicy(p BackoffPolicy) Option { return func(c *config) { c.backoff = p } }

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
