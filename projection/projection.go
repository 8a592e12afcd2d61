package projection

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/eventstore"
)

// ApplyFunc applies one record to a read model by queueing Redis writes on
// the batch.
type ApplyFunc func(ctx context.Context, b *Batch, rec eventstore.Record) error

// Projection is a named read model and the function that applies records to
// it.
type Projection interface {
	// Name identifies the projection; it is part of every key of its read
	// model, so it must not change while the read model is in use.
	Name() string
	// Apply applies one record. It queues its writes on b.Pipe() (they are
	// committed with the checkpoint in one MULTI/EXEC) and reads committed
	// state through b.Reader(). An error makes the runner retry the record
	// and finally park it; see Permanent.
	Apply(ctx context.Context, b *Batch, rec eventstore.Record) error
}

type funcProjection struct {
	name  string
	apply ApplyFunc
}

func (p funcProjection) Name() string { return p.name }

func (p funcProjection) Apply(ctx context.Context, b *Batch, rec eventstore.Record) error {
	return p.apply(ctx, b, rec)
}

// New returns a Projection with the given name and apply function.
func New(name string, apply ApplyFunc) Projection {
	return funcProjection{name: name, apply: apply}
}

// Typed returns an ApplyFunc that decodes each record with reg and calls fn
// with the value when it is an E (usually the interface a domain's events
// implement, or one concrete event type). Records of unregistered types or of
// types that are not an E are ignored; a payload that cannot be decoded is a
// permanent error (the record is parked without retries).
func Typed[E any](reg *eventstore.Registry, fn func(ctx context.Context, b *Batch, rec eventstore.Record, ev E) error) ApplyFunc {
	return func(ctx context.Context, b *Batch, rec eventstore.Record) error {
		v, err := reg.Decode(rec)
		if err != nil {
			if errors.Is(err, eventstore.ErrUnknownEventType) {
				return nil
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

// Namespace is one version of a projection's read model: the key space
// <prefix><projection>:v<version>:.
type Namespace struct {
	// Prefix is the runner's key prefix.
	Prefix string
	// Projection is the projection's name.
	Projection string
	// Version is the namespace version (1 for the first build).
	Version int64
}

// String returns the namespace's key stem, <prefix><projection>:v<version>.
func (n Namespace) String() string {
	return n.Prefix + n.Projection + ":v" + strconv.FormatInt(n.Version, 10)
}

// Key returns the key made of the namespace stem and parts, joined by ":".
func (n Namespace) Key(parts ...string) string {
	size := len(n.Prefix) + len(n.Projection) + 24
	for _, p := range parts {
		size += len(p) + 1
	}
	var b strings.Builder
	b.Grow(size)
	b.WriteString(n.Prefix)
	b.WriteString(n.Projection)
	b.WriteString(":v")
	b.WriteString(strconv.FormatInt(n.Version, 10))
	for _, p := range parts {
		b.WriteByte(':')
		b.WriteString(p)
	}
	return b.String()
}

// Batch is what an apply function writes through. A Batch is used by one
// goroutine at a time and must not be kept after Apply returns.
type Batch struct {
	pipe   redis.Pipeliner
	reader redis.Cmdable
	ns     Namespace
	replay bool
	after  []func(context.Context)
}

// Pipe returns the pipeline of the batch's transaction: queue the record's
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
)

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
