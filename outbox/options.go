package outbox

import (
	"log/slog"
	"time"

	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/lease"
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

// BackoffPolicy is the retry schedule of eskit's long-running parts: after
// the n-th failure in a row a part waits Initial·Multiplierⁿ⁻¹ (Multiplier
// 2 when zero), capped at Max, of which the fraction Jitter (0 to 1) is
// random. It is the same type as projection.BackoffPolicy.
type BackoffPolicy = backoff.Policy

// DefaultBackoff is the relay's retry schedule: 50 ms doubling up to 5 s,
// with a fifth of each delay random, so that relays that failed together
// (a PostgreSQL restart) do not retry in step.
var DefaultBackoff = BackoffPolicy{Initial: DefaultMinBackoff, Max: DefaultMaxBackoff, Multiplier: 2, Jitter: 0.2}

// Option configures a Relay.
type Option func(*config)

type config struct {
	schema          string // empty: the feed's (a *pgstore.Store), else DefaultSchema
	name            string
	prefix          string
	batchSize       int
	maxInFlight     int
	ackTimeout      time.Duration
	backoff         BackoffPolicy
	standbyInterval time.Duration
	checkInterval   time.Duration
	saveInterval    time.Duration
	msgTTL          time.Duration
	features        []natsevent.Feature
	wait            eventstore.WaitFunc
	checkpoints     Checkpoints
	leaseTTL        time.Duration
	logger          *slog.Logger
	telemetry       []telemetry.Option

	// serverVersion, when set, stands for the connected server's version
	// (tests: a server too old for a feature).
	serverVersion string
}

func defaultConfig() config {
	return config{
		name:            DefaultName,
		prefix:          natsevent.DefaultPrefix,
		batchSize:       DefaultBatchSize,
		maxInFlight:     DefaultMaxInFlight,
		ackTimeout:      DefaultAckTimeout,
		backoff:         DefaultBackoff,
		standbyInterval: DefaultStandbyInterval,
		checkInterval:   DefaultCheckInterval,
		saveInterval:    DefaultCheckpointInterval,
		leaseTTL:        lease.DefaultTTL,
	}
}

// WithSchema sets the PostgreSQL schema of the checkpoints table. By default
// it is the schema of the event store the relay reads when that store says
// (a *pgstore.Store has Schema), DefaultSchema otherwise: the table is
// created by the store's migrations, so it lives where the events do.
func WithSchema(schema string) Option { return func(c *config) { c.schema = schema } }

// WithName sets the relay's name: its checkpoint row and its lease
// (LeaseName). Relays with the same name and schema elect one leader
// (default DefaultName).
func WithName(name string) Option { return func(c *config) { c.name = name } }

// WithPrefix sets the subject prefix (default natsevent.DefaultPrefix): one
// word, such as "bank", that names the deployment everywhere. Subjects are
// "<prefix>.…", the stream is natsevent.StreamName(prefix) ("BANK"), and
// projection.WithPrefix takes the same word for the read models' keys
// ("bank:…").
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

// WithBackoffPolicy sets how long the relay waits before it retries after
// a failure: of the leader election, of publishing (it then resumes from
// its checkpoint), or of its leadership (default DefaultBackoff).
func WithBackoffPolicy(p BackoffPolicy) Option { return func(c *config) { c.backoff = p } }

// WithStandbyInterval sets how often a standby tries to acquire the lease
// (default DefaultStandbyInterval, with a fifth of it random); it tries
// sooner when the lease store says the leader's lease expires sooner.
func WithStandbyInterval(d time.Duration) Option {
	return func(c *config) { c.standbyInterval = d }
}

// WithCheckInterval sets how often the leader refreshes its lag figures
// from the feed's head and, while it has no checkpoint to write, verifies
// its lease in the lease store, and how often a standby reads the
// leader's lease and progress into Stats (default DefaultCheckInterval).
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

// WithRequiredFeatures adds server features that Run requires besides the
// relay's own (Features lists them all), so that a deployment whose other
// parts rely on a feature, say consumers with several filter subjects
// (natsevent.FeatureMultiFilter), refuses an older server when its relay
// starts instead of degrading later.
func WithRequiredFeatures(fs ...natsevent.Feature) Option {
	return func(c *config) { c.features = append(c.features, fs...) }
}

// WithWaiter sets how the relay waits for new events once it has caught up.
// Without it the relay follows the feed with its Subscribe when it has one,
// and with short adaptive polling otherwise.
func WithWaiter(wait eventstore.WaitFunc) Option { return func(c *config) { c.wait = wait } }

// WithCheckpoints sets where the relay elects its leader (their Leases)
// and keeps its checkpoint, instead of PostgreSQL (NewRelay's pool may then be nil): for
// example a MemoryCheckpoints shared by the relays of one process.
func WithCheckpoints(c Checkpoints) Option { return func(cfg *config) { cfg.checkpoints = c } }

// WithLeaseTTL sets the TTL of the relay's lease (default
// lease.DefaultTTL, 5 s): a leader that freezes, crashes or is cut off
// from the lease store is replaced within it, and a leader that fails to
// publish for longer than it steps down. The leader renews every TTL/3;
// relays of one name should share the TTL.
func WithLeaseTTL(d time.Duration) Option { return func(c *config) { c.leaseTTL = d } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }
