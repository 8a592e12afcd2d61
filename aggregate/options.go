package aggregate

import (
	"context"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/snapshot"
	"github.com/eskit/eskit/telemetry"
)

// Defaults of the repository's options.
const (
	// DefaultMaxRetries is how many times Handle retries a command after a
	// concurrency conflict before it gives up (10 attempts in all). It is a
	// command's whole conflict budget: commandbus.Retry does not retry a
	// conflict the repository gave up on (see RetriesExhaustedError), so it
	// covers a hot stream's contention by itself.
	DefaultMaxRetries = 9
	// DefaultSnapshotQueue is how many streams may wait for a snapshot.
	DefaultSnapshotQueue = 1024
	// DefaultSnapshotTimeout bounds one snapshot save.
	DefaultSnapshotTimeout = 10 * time.Second
	// DefaultLongReplay is how many events a load must replay (after its
	// snapshot, if any) to be logged at debug level.
	DefaultLongReplay = 1000
)

// DefaultBackoff is the delay between conflict retries: 2 ms doubling up to
// 50 ms, half of each delay random, so that writers that met on a stream do
// not meet again.
var DefaultBackoff = backoff.Policy{Initial: 2 * time.Millisecond, Max: 50 * time.Millisecond, Multiplier: 2, Jitter: 0.5}

type config struct {
	maxRetries      int
	backoff         backoff.Policy
	snapshots       snapshot.Store
	policy          snapshot.Policy
	codec           snapshot.StateCodec
	schemaVersion   int
	queueSize       int
	snapshotTimeout time.Duration
	logger          *slog.Logger
	metadataFrom    func(context.Context) eventstore.Metadata
	noTraceContext  bool
	cacheSize       int
	longReplay      int
	telOpts         []telemetry.Option
}

// Option configures a Repository.
type Option func(*config)

// WithMaxRetries sets how many times a command is retried after a
// concurrency conflict (DefaultMaxRetries; 0 means no retry).
func WithMaxRetries(n int) Option {
	return func(c *config) { c.maxRetries = max(n, 0) }
}

// WithBackoff sets the delay between conflict retries (DefaultBackoff);
// the zero Policy retries at once. NewRepository refuses a policy that
// does not validate.
func WithBackoff(p backoff.Policy) Option {
	return func(c *config) { c.backoff = p }
}

// WithStateCache keeps the states of up to n recently used streams in
// memory (least recently used first out; n below 1 turns the cache off,
// the default). Handle then usually costs one round trip to the store
// instead of two:
//
//   - a stream in the cache is decided on its cached state and appended to
//     with the cached version as the expected version;
//   - a stream not in the cache is guessed to be new: the command is decided
//     on the initial state and appended to with NoStream.
//
// Only a successful append confirms such a guess. Whenever it fails (a
// concurrency conflict because another writer moved the stream, or the
// command ID's events are stored already) and whenever the guessed
// decision rejects the command or causes no events, nothing has been
// written: Handle drops the entry and takes the ordinary path (load,
// decide, append, retries), so results, rejections and the answers to
// retried commands are those of a repository without the cache. The cache
// is refreshed by every load and every successful append of the
// repository; writers elsewhere only make it stale, which costs a reload.
//
// A stream that exists but is not in the cache costs an extra round trip
// when its command is also accepted on the initial state (the append with
// NoStream conflicts first). States are shared between the cache,
// concurrent commands and Results: the Decider must honour its contract
// (Decide and Evolve never change a state they are given), and callers
// must not change a Result's State in place.
func WithStateCache(n int) Option {
	return func(c *config) { c.cacheSize = max(n, 0) }
}

// WithSnapshots makes the repository load states from store and take
// snapshots, in the background, whenever policy says so after an append
// (snapshot.EveryN(n) counts events, not commands).
//
// With pgstore, pass the event store's own snapshot store
// (store.Snapshots()): a load then reads the snapshot and the events after
// it in one round trip (see snapshot.EventLoader).
func WithSnapshots(store snapshot.Store, policy snapshot.Policy) Option {
	return func(c *config) {
		c.snapshots = store
		c.policy = policy
	}
}

// WithStateCodec sets the codec of snapshot states (snapshot.JSON by
// default).
func WithStateCodec(codec snapshot.StateCodec) Option {
	return func(c *config) { c.codec = codec }
}

// WithStateSchemaVersion sets the schema version of the state's encoding
// (1 by default). Change it whenever the encoded state changes
// incompatibly: snapshots of another schema version are then ignored, the
// state is rebuilt from the events and snapshotted anew.
func WithStateSchemaVersion(v int) Option {
	return func(c *config) { c.schemaVersion = v }
}

// WithSnapshotQueue sets how many streams may wait for a snapshot
// (DefaultSnapshotQueue). Requests for a stream already waiting replace its
// older request; requests beyond the bound are dropped (a later append
// asks again).
func WithSnapshotQueue(n int) Option {
	return func(c *config) { c.queueSize = max(n, 1) }
}

// WithSnapshotTimeout bounds one snapshot save (DefaultSnapshotTimeout).
func WithSnapshotTimeout(d time.Duration) Option {
	return func(c *config) { c.snapshotTimeout = d }
}

// WithLongReplay sets how many events a load must replay (after its
// snapshot, if any) to be logged at debug level ("aggregate: load replayed
// a long tail", with the stream, the number of events, the snapshot's
// version and the time taken); DefaultLongReplay below 1. Every load also
// records the number of events it replayed in the
// telemetry.MetricLoadEvents histogram (see WithTelemetry).
func WithLongReplay(events int) Option {
	return func(c *config) { c.longReplay = events }
}

// WithTelemetry sets the meter provider of the repository's metrics (the
// OpenTelemetry global one otherwise): telemetry.MetricLoadEvents, the
// number of events each load replayed, by whether it started from a
// snapshot (telemetry.LabelSnapshot).
func WithTelemetry(opts ...telemetry.Option) Option {
	return func(c *config) { c.telOpts = append(c.telOpts, opts...) }
}

// WithLogger sets the logger (slog.Default() otherwise).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.logger = l }
}

// WithMetadataFrom sets a function that extracts metadata (for example a
// correlation ID or trace context) from the context of each Handle call.
// Metadata given to the call with WithMetadata takes precedence.
func WithMetadataFrom(fn func(context.Context) eventstore.Metadata) Option {
	return func(c *config) { c.metadataFrom = fn }
}

// WithTraceContext turns on or off (on by default) the writing of the
// context's trace context (W3C traceparent and tracestate, see package
// telemetry) into the metadata of the events a command causes, whenever the
// context of the Handle call carries a valid span context. The relay and
// the projection runner continue the trace from it.
func WithTraceContext(on bool) Option {
	return func(c *config) { c.noTraceContext = !on }
}

type callConfig struct {
	commandID uuid.UUID
	metadata  eventstore.Metadata
}

// HandleOption configures one Handle call.
type HandleOption func(*callConfig)

// WithCommandID identifies the command. The events it causes get IDs
// derived from it (see EventID), so a command handled again with the same
// ID is answered with its original result instead of being applied twice.
// The ID also becomes the events' causation ID, and their correlation ID
// when the metadata carries none.
func WithCommandID(id uuid.UUID) HandleOption {
	return func(c *callConfig) { c.commandID = id }
}

// WithMetadata adds metadata to every event the command causes.
func WithMetadata(md eventstore.Metadata) HandleOption {
	return func(c *callConfig) {
		if len(md) == 0 {
			return
		}
		if c.metadata == nil {
			c.metadata = eventstore.Metadata{}
		}
		for k, v := range md {
			c.metadata[k] = v
		}
	}
}
