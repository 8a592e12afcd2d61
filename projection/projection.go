package projection

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/eventstore"
)

// ApplyFunc applies one record to a read model by queueing Redis writes on
// the batch.
type ApplyFunc func(ctx context.Context, b *Batch, rec eventstore.Record) error

// Projection is a named read model and the function that applies records to
// it.
type Projection interface {
	// Name identifies the projection (see ValidateName); it is part of
	// every key of its read model, so it must not change while the read
	// model is in use.
	Name() string
	// Apply applies one record. It queues its writes on b.Pipe() (they are
	// committed with the checkpoint in one MULTI/EXEC) and reads committed
	// state through b.Reader(). An error makes the runner retry the record
	// and finally park it; see Permanent.
	Apply(ctx context.Context, b *Batch, rec eventstore.Record) error
}

type funcProjection struct {
	name       string
	apply      ApplyFunc
	partitions int
	setup      func(ctx context.Context, tx pgx.Tx, ns Namespace) error
	clear      func(ctx context.Context, tx pgx.Tx, ns Namespace) error
}

func (p funcProjection) Name() string { return p.name }

func (p funcProjection) Apply(ctx context.Context, b *Batch, rec eventstore.Record) error {
	return p.apply(ctx, b, rec)
}

// New returns a Projection with the given name (see ValidateName) and
// apply function.
func New(name string, apply ApplyFunc, opts ...ProjectionOption) Projection {
	p := funcProjection{name: name, apply: apply, partitions: 1}
	for _, o := range opts {
		o(&p)
	}
	return p
}

// ProjectionOption configures a projection made by New.
type ProjectionOption func(*funcProjection)

// Partitions makes a projection applied in n partitions (1 by default, at
// most eventstore.StreamBuckets): a stream's records always go to the same
// partition (eventstore.StreamPartition), so each stream is applied in
// order, and runners of the projection share the partitions. The number
// is stored with the read model; changing it needs a new projection name
// (a new read model built from the store).
func Partitions(n int) ProjectionOption { return func(p *funcProjection) { p.partitions = n } }

// Partitioned is implemented by projections applied in several
// partitions (see Partitions). A Projection without it has one.
type Partitioned interface {
	Partitions() int
}

func (p funcProjection) Partitions() int { return p.partitions }

// PostgresSetup is implemented by projections whose read model lives in
// PostgreSQL (the Postgres target requires it): Setup creates the tables
// of a namespace version in ns.Schema(), which exists. It runs once per
// version, in the transaction of the version's first batch.
type PostgresSetup interface {
	Setup(ctx context.Context, tx pgx.Tx, ns Namespace) error
}

// PostgresClear is implemented by partitioned projections in PostgreSQL
// (the Postgres target requires it when there are several partitions):
// Clear deletes the rows of partition ns.Partition from ns.Schema()'s
// tables, when that partition's part of a version is built again. (With
// one partition, the version's schema is dropped instead.) A partitioned
// projection's tables therefore say which partition wrote a row, as its
// Redis keys do: a partition only writes the rows of its streams, and
// aggregates across streams are kept per partition
// (ns.Partition) and summed by queries.
type PostgresClear interface {
	Clear(ctx context.Context, tx pgx.Tx, ns Namespace) error
}

// Setup gives a projection made by New the Setup of PostgresSetup.
func Setup(fn func(ctx context.Context, tx pgx.Tx, ns Namespace) error) ProjectionOption {
	return func(p *funcProjection) { p.setup = fn }
}

// Clear gives a projection made by New the Clear of PostgresClear.
func Clear(fn func(ctx context.Context, tx pgx.Tx, ns Namespace) error) ProjectionOption {
	return func(p *funcProjection) { p.clear = fn }
}

// setupOf and clearOf return a projection's PostgreSQL hooks (nil when it
// has none).
func setupOf(p Projection) func(ctx context.Context, tx pgx.Tx, ns Namespace) error {
	if fp, ok := p.(funcProjection); ok {
		return fp.setup
	}
	if s, ok := p.(PostgresSetup); ok {
		return s.Setup
	}
	return nil
}

func clearOf(p Projection) func(ctx context.Context, tx pgx.Tx, ns Namespace) error {
	if fp, ok := p.(funcProjection); ok {
		return fp.clear
	}
	if c, ok := p.(PostgresClear); ok {
		return c.Clear
	}
	return nil
}

// partitionsOf returns a projection's number of partitions.
func partitionsOf(p Projection) int {
	if pp, ok := p.(Partitioned); ok {
		return pp.Partitions()
	}
	return 1
}

// Typed returns an ApplyFunc that decodes each record with reg and calls fn
// with the value when it is an E (usually the interface a domain's events
// implement, or one concrete event type). Records of types that are
// registered but are not an E are ignored (that is the typed filter).
//
// A record of a type that is not registered in reg at all is a permanent
// error by default (the record is parked without retries and the error,
// naming the type, shows in Status, Parked and the CLI): a forgotten
// Register must not silently leave an empty read model. A projection that
// deliberately sees foreign events (other domains sharing the store) opts
// out with IgnoreUnregistered. A payload that cannot be decoded is a
// permanent error too.
func Typed[E any](reg *eventstore.Registry, fn func(ctx context.Context, b *Batch, rec eventstore.Record, ev E) error, opts ...TypedOption) ApplyFunc {
	var o typedOptions
	for _, opt := range opts {
		opt(&o)
	}
	return func(ctx context.Context, b *Batch, rec eventstore.Record) error {
		v, err := reg.Decode(rec)
		if err != nil {
			if errors.Is(err, eventstore.ErrUnknownEventType) {
				if o.ignoreUnregistered {
					return nil
				}
				return Permanent(&UnregisteredTypeError{Type: rec.Type, Err: err})
			}
			return Permanent(err)
		}
		ev, ok := v.(E)
		if !ok {
			return nil
		}
		return fn(ctx, b, rec, ev)
	}
}

// TypedOption configures Typed.
type TypedOption func(*typedOptions)

type typedOptions struct {
	ignoreUnregistered bool
}

// IgnoreUnregistered makes Typed skip records whose event type is not
// registered in its registry, instead of parking them: for projections
// that deliberately see events of other domains.
func IgnoreUnregistered() TypedOption {
	return func(o *typedOptions) { o.ignoreUnregistered = true }
}

// UnregisteredTypeError is the (permanent) error Typed returns for a record
// whose event type is not registered in its registry. It matches
// eventstore.ErrUnknownEventType.
type UnregisteredTypeError struct {
	// Type is the record's event type name.
	Type string
	// Err is the registry's error.
	Err error
}

func (e *UnregisteredTypeError) Error() string {
	return fmt.Sprintf("projection: event type %q is not registered in the projection's registry "+
		"(register it, or pass projection.IgnoreUnregistered() to Typed to skip foreign events)", e.Type)
}

func (e *UnregisteredTypeError) Unwrap() error { return e.Err }

// permanentError marks an apply error that retrying cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks an apply error as permanent: the runner parks the record
// at once instead of retrying it. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// Namespace is one version of a projection's read model, seen from one of
// its partitions: the keys <prefix>{<projection>:<partition>}:v<version>:m:.
// A projection with one partition (the default) has partition 0 only.
type Namespace struct {
	// Prefix is the runner's key prefix, separator included: KeyPrefix of
	// the prefix the runner was given ("bank:" for "bank"). It is used as
	// it is.
	Prefix string
	// Projection is the projection's name.
	Projection string
	// Version is the namespace version (1 for the first build).
	Version int64
	// Partition is the partition whose keys Key builds.
	Partition int
	// Partitions is the projection's number of partitions (at least 1).
	Partitions int
}

// String returns the namespace's key stem, <prefix>{<projection>:<partition>}:v<version>.
func (n Namespace) String() string {
	return newKeys(n.Prefix, n.Projection).version(n.Partition, n.Version)
}

// Key returns the read-model key made of the namespace's stem, "m" and
// parts, joined by ":". All keys of one partition share a Redis Cluster
// hash slot with the partition's checkpoint.
func (n Namespace) Key(parts ...string) string {
	size := len(n.Prefix) + len(n.Projection) + 32
	for _, p := range parts {
		size += len(p) + 1
	}
	var b strings.Builder
	b.Grow(size)
	b.WriteString(n.Prefix)
	b.WriteByte('{')
	b.WriteString(n.Projection)
	b.WriteByte(':')
	b.WriteString(strconv.Itoa(n.Partition))
	b.WriteString("}:v")
	b.WriteString(strconv.FormatInt(n.Version, 10))
	b.WriteString(":m")
	for _, p := range parts {
		b.WriteByte(':')
		b.WriteString(p)
	}
	return b.String()
}

// ForStream returns the namespace of the partition that applies the given
// stream's events: read a stream's keys through it.
func (n Namespace) ForStream(streamID string) Namespace {
	n.Partition = eventstore.StreamPartition(streamID, max(n.Partitions, 1))
	return n
}

// ForPartition returns the namespace of partition p.
func (n Namespace) ForPartition(p int) Namespace {
	n.Partition = p
	return n
}

// All returns the namespaces of every partition, in partition order: a
// query over the whole read model (a total, say) combines what each holds.
func (n Namespace) All() []Namespace {
	out := make([]Namespace, max(n.Partitions, 1))
	for p := range out {
		out[p] = n.ForPartition(p)
	}
	return out
}

// Schema returns the PostgreSQL schema of the namespace version's tables
// (on a PostgreSQL target): every partition of a version shares it, and
// each version has its own, so a rebuild writes new tables while the old
// ones serve, and the old schema is dropped after the switch. The name is
// "rm_", the projection's name (lower case, other characters as '_',
// truncated), a hash of the prefix and the name, and "_v<version>": at
// most 63 bytes, a PostgreSQL identifier.
func (n Namespace) Schema() string {
	name := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '_'
	}, n.Projection)
	if len(name) > 28 {
		name = name[:28]
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(n.Prefix))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(n.Projection))
	return fmt.Sprintf("rm_%s_%08x_v%d", name, h.Sum32(), n.Version)
}

// Table returns the quoted, schema-qualified name of a table of the
// namespace version (on a PostgreSQL target), for SQL.
func (n Namespace) Table(table string) string {
	return pgx.Identifier{n.Schema(), table}.Sanitize()
}

// Batch is what an apply function writes through. A Batch is used by one
// goroutine at a time and must not be kept after Apply returns.
type Batch struct {
	pipe   redis.Pipeliner // Redis targets
	reader redis.Cmdable
	tx     pgx.Tx // PostgreSQL targets
	usedTx bool   // the apply ran statements on tx at once, or gathered
	queued []queuedStatement
	// gathered are the batch's Gatherers, by key, in order of first use.
	gathered map[string]Gatherer
	order    []string
	ns       Namespace
	replay   bool
	after    []func(context.Context)
}

// queuedStatement is a statement queued on a PostgreSQL batch.
type queuedStatement struct {
	sql  string
	args []any
}

// Tx returns the batch's PostgreSQL transaction (on a PostgreSQL target;
// nil on others): statements run at once, and reads see the batch's
// earlier writes. The transaction also commits the checkpoint; do not
// commit or roll it back. Prefer Queue for writes: queued statements go
// to the server together.
func (b *Batch) Tx() pgx.Tx {
	b.usedTx = true
	return b.tx
}

// A Gatherer collects writes over a batch's records, to write them
// together: sums per row, rows for one multi-row insert (unnest, COPY).
// See Batch.Gather.
type Gatherer interface {
	// Flush writes what was gathered, in the batch's transaction.
	Flush(ctx context.Context, tx pgx.Tx) error
}

// Gather returns the batch's Gatherer under key, made by newGatherer on
// the key's first use in the batch (on a PostgreSQL target). Its Flush
// runs once, before the batch commits, in the batch's transaction: a
// projection that writes one statement per batch instead of one per
// record (the same sum added to a row, a multi-row insert) goes many
// times faster. When an apply fails after gathering, the batch is applied
// again record by record (each record's Gatherers flushed on their own),
// so that the failing record's part is undone alone.
func (b *Batch) Gather(key string, newGatherer func() Gatherer) Gatherer {
	b.usedTx = true
	if g, ok := b.gathered[key]; ok {
		return g
	}
	if b.gathered == nil {
		b.gathered = map[string]Gatherer{}
	}
	g := newGatherer()
	b.gathered[key] = g
	b.order = append(b.order, key)
	return g
}

// flushGathered flushes the batch's Gatherers, in order of first use, and
// forgets them.
func (b *Batch) flushGathered(ctx context.Context, tx pgx.Tx) error {
	order := b.order
	gathered := b.gathered
	b.order, b.gathered = nil, nil
	for _, k := range order {
		if err := gathered[k].Flush(ctx, tx); err != nil {
			return fmt.Errorf("flush %q: %w", k, err)
		}
	}
	return nil
}

// Queue queues a statement of the batch's PostgreSQL transaction (on a
// PostgreSQL target): the batch's queued statements are sent together,
// in order, in the transaction that also commits the checkpoint.
func (b *Batch) Queue(sql string, args ...any) {
	b.queued = append(b.queued, queuedStatement{sql: sql, args: args})
}

// Pipe returns the pipeline of the batch's transaction (on a Redis
// target; nil on others): queue the record's
// writes on it. The commands run in the MULTI/EXEC that also advances the
// checkpoint, so their results are only available after the batch commits;
// do not call Exec, Discard or Pipelined on it. Writes of earlier records of
// the same batch are not visible to reads yet, so prefer commands that
// compose (HINCRBY, SADD, RPUSH, SET of whole values, EVAL of a script)
// over reading and rewriting a value.
func (b *Batch) Pipe() redis.Pipeliner { return b.pipe }

// Reader returns a client for reading already committed state. Use it only
// for reads: writes through it bypass the transaction and the checkpoint.
func (b *Batch) Reader() redis.Cmdable { return b.reader }

// Namespace returns the namespace the batch writes to.
func (b *Batch) Namespace() Namespace { return b.ns }

// Key returns a key in the batch's namespace (see Namespace.Key).
func (b *Batch) Key(parts ...string) string { return b.ns.Key(parts...) }

// Replay reports whether the record is history replayed into a namespace
// that is being built, as opposed to a new event reaching the serving read
// model: every record of a rebuild's new namespace before the switch, and,
// in a projection's first build, the records up to the feed's head when
// that build began (events appended during the first build are new). Side
// effects (emails, webhooks) should fire only when Replay is false.
func (b *Batch) Replay() bool { return b.replay }

// AfterCommit registers fn to run after the batch has committed, unless the
// batch is a replay (then fn is dropped). It is the place for side effects.
// fn runs at most once per apply that reached a commit; a record applied
// again after a crash before its commit registers it again.
func (b *Batch) AfterCommit(fn func(ctx context.Context)) {
	if b.replay || fn == nil {
		return
	}
	b.after = append(b.after, fn)
}

// Sentinel errors.
var (
	// ErrUnknownProjection: no projection of that name is registered with
	// the runner.
	ErrUnknownProjection = errors.New("projection: unknown projection")
	// ErrNotActive: this runner does not currently hold the projection's
	// lease, so it cannot apply, rebuild or retry anything.
	ErrNotActive = errors.New("projection: runner is not the active runner of the projection")
	// ErrLeaseLost: the runner lost the projection's lease; the batch was
	// not committed.
	ErrLeaseLost = errors.New("projection: lease lost")
	// ErrRebuildInProgress: a rebuild of the projection is already running.
	ErrRebuildInProgress = errors.New("projection: rebuild already in progress")
	// ErrTimeout: WaitFor's deadline passed before the checkpoint reached
	// the position. TimeoutError carries the details.
	ErrTimeout = errors.New("projection: timed out waiting for checkpoint")
	// ErrNotReady: the projection has no complete read model to serve yet
	// (its first build is running, or a partition lost its data and is
	// being rebuilt). NotReadyError carries the details; retry later.
	ErrNotReady = errors.New("projection: read model not ready")
)

// NotReadyError reports a projection whose read model must not be served:
// it is not complete. It matches ErrNotReady.
type NotReadyError struct {
	Projection string
	// Reason says why: "first build", or which partitions lost their data.
	Reason string
}

func (e *NotReadyError) Error() string {
	return fmt.Sprintf("projection: %q is not ready: %s", e.Projection, e.Reason)
}

// Is makes errors.Is match ErrNotReady.
func (e *NotReadyError) Is(target error) bool { return target == ErrNotReady }

// Temporary reports that the condition passes (retry later).
func (e *NotReadyError) Temporary() bool { return true }

// TimeoutError reports that a projection's checkpoint did not reach a
// position before the deadline. It matches ErrTimeout and
// context.DeadlineExceeded.
type TimeoutError struct {
	Projection string
	// Want is the position waited for.
	Want eventstore.Position
	// Reached is the last checkpoint seen.
	Reached eventstore.Position
	// Waited is how long the caller waited.
	Waited time.Duration
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("projection: %q did not reach position %s within %s (checkpoint %s)",
		e.Projection, e.Want, e.Waited.Round(time.Millisecond), e.Reached)
}

// Is makes errors.Is match ErrTimeout and context.DeadlineExceeded.
func (e *TimeoutError) Is(target error) bool {
	return target == ErrTimeout || target == context.DeadlineExceeded
}
