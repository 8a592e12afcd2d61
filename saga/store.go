package saga

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/lease"
)

// Status is where an instance is in its life.
type Status string

// The statuses of an instance. Stores derive them from what they hold:
// done once a step completed the instance, parked while a failure waits
// for an operator, waiting while it has a deadline, running otherwise.
const (
	// StatusRunning: live, no deadline pending.
	StatusRunning Status = "running"
	// StatusWaiting: live, with at least one deadline pending.
	StatusWaiting Status = "waiting"
	// StatusParked: a step or a command kept failing; the instance does
	// nothing (its new records are held back in order) until an operator
	// retries or skips the failure.
	StatusParked Status = "parked"
	// StatusDone: a step completed the instance; records for it are
	// ignored from now on. Its last commands are still sent.
	StatusDone Status = "done"
)

// Statuses lists every status, in display order.
var Statuses = [...]Status{StatusRunning, StatusWaiting, StatusParked, StatusDone}

// Valid reports whether s is one of the statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusRunning, StatusWaiting, StatusParked, StatusDone:
		return true
	}
	return false
}

// ParkKind names what an instance is parked on.
type ParkKind string

// What an instance can be parked on. Skip drops that thing; Retry tries it
// again.
const (
	// ParkCommand: the instance's oldest unsent command kept failing.
	ParkCommand ParkKind = "command"
	// ParkRecord: the step for the instance's oldest held record kept
	// failing.
	ParkRecord ParkKind = "record"
	// ParkDeadline: the step of the deadline named in Park.Ref kept
	// failing.
	ParkDeadline ParkKind = "deadline"
)

// Limits of identifiers. Stores refuse what lies outside them with an
// error matching ErrInvalidArgument before they write anything.
const (
	// MaxInstanceIDLength is the longest instance ID, in bytes.
	MaxInstanceIDLength = 1024
	// MaxNameLength is the longest saga or deadline name, in bytes.
	MaxNameLength = 200
	// MaxPartitions is the most partitions a saga may have (the number of
	// stream buckets, as for projections).
	MaxPartitions = eventstore.StreamBuckets
)

// Sentinel errors. Match them with errors.Is; the typed errors carry the
// details.
var (
	// ErrFenced: a write carried a fencing token that is not the
	// partition's current one (another runner claimed the partition since).
	// The caller must stop working on the partition. It matches
	// lease.ErrFenced and lease.ErrLost too.
	ErrFenced = errors.New("saga: write fenced off (stale token)")
	// ErrConflict: the instance changed since it was loaded (an operator
	// retried or skipped it, or a deadline was fired or rescheduled). The
	// runner reloads and goes on.
	ErrConflict = errors.New("saga: instance changed concurrently")
	// ErrNotFound: no such instance.
	ErrNotFound = errors.New("saga: instance not found")
	// ErrNotParked: Retry or Skip of an instance that is not parked.
	ErrNotParked = errors.New("saga: instance is not parked")
	// ErrInvalidArgument: an instance ID, name or value outside the
	// limits; nothing was written.
	ErrInvalidArgument = errors.New("saga: invalid argument")
)

// FencedError is a write refused by its fencing check. It matches
// ErrFenced, lease.ErrFenced and lease.ErrLost.
type FencedError struct {
	Saga      string
	Partition int
	// Token is the write's token, Current the partition's.
	Token, Current uint64
}

func (e *FencedError) Error() string {
	return fmt.Sprintf("saga %q partition %d: write with token %d fenced off: the partition's token is %d", e.Saga, e.Partition, e.Token, e.Current)
}

// Is makes errors.Is match ErrFenced, lease.ErrFenced and lease.ErrLost.
func (e *FencedError) Is(target error) bool {
	return target == ErrFenced || target == lease.ErrFenced || target == lease.ErrLost
}

// ConflictError reports an instance that changed since it was loaded. It
// matches ErrConflict.
type ConflictError struct {
	Saga, ID string
	Reason   string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("saga %q instance %q changed concurrently: %s", e.Saga, e.ID, e.Reason)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// InvalidError reports an argument outside the limits. It matches
// ErrInvalidArgument.
type InvalidError struct {
	Field, Value, Reason string
}

func (e *InvalidError) Error() string {
	v := e.Value
	if len(v) > 64 {
		v = v[:64] + "…"
	}
	return fmt.Sprintf("saga: invalid %s %q: %s", e.Field, v, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidArgument) true.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalidArgument }

// ValidateInstanceID checks an instance ID: 1 to MaxInstanceIDLength bytes
// of UTF-8 without NUL. Any other character is fine.
func ValidateInstanceID(id string) error { return validate("instance ID", id, MaxInstanceIDLength) }

// ValidateName checks a saga or deadline name as ValidateInstanceID checks
// an ID, up to MaxNameLength bytes.
func ValidateName(name string) error { return validate("name", name, MaxNameLength) }

func validate(field, s string, limit int) error {
	switch {
	case s == "":
		return &InvalidError{Field: field, Reason: "empty"}
	case len(s) > limit:
		return &InvalidError{Field: field, Value: s, Reason: fmt.Sprintf("%d bytes, limit %d", len(s), limit)}
	case strings.IndexByte(s, 0) >= 0:
		return &InvalidError{Field: field, Value: s, Reason: "contains NUL"}
	case !utf8.ValidString(s):
		return &InvalidError{Field: field, Value: s, Reason: "not valid UTF-8"}
	}
	return nil
}

// Fence identifies the holder of one partition of a saga: every write of
// the runner carries it, and a store refuses it once a higher token
// claimed the partition.
type Fence struct {
	Saga      string
	Partition int
	// Token is the fencing token (from the partition's lease): it strictly
	// increases from one holder to the next.
	Token uint64
}

func (f Fence) validate() error {
	if f.Token == 0 {
		return &InvalidError{Field: "token", Value: "0", Reason: "a fence needs a token"}
	}
	return f.validateClaim()
}

func (f Fence) validateClaim() error {
	if err := ValidateName(f.Saga); err != nil {
		return err
	}
	if f.Partition < 0 || f.Partition >= MaxPartitions {
		return &InvalidError{Field: "partition", Value: fmt.Sprint(f.Partition), Reason: fmt.Sprintf("want 0 to %d", MaxPartitions-1)}
	}
	return nil
}

// PartitionProgress is where a partition of a saga stands.
type PartitionProgress struct {
	Partition int
	// Checkpoint is the position up to which the partition has read the
	// feed.
	Checkpoint eventstore.Position
	// Token is the fencing token that claimed the partition last.
	Token uint64
	// UpdatedAt is when the checkpoint last moved or the partition was
	// last claimed (by the store's clock; the runner's for a store without
	// one): a runner that leads the partition and does not advance it
	// while the feed's head is ahead has stalled.
	UpdatedAt time.Time
}

// Claimed is the outcome of Claim.
type Claimed struct {
	Checkpoint eventstore.Position
	Token      uint64
}

// Park describes why an instance is parked.
type Park struct {
	Kind ParkKind `json:"kind"`
	// Ref names the thing parked on: the command's ID, the held record's
	// event ID, or the deadline's name.
	Ref string `json:"ref,omitempty"`
	// Error is the last failure.
	Error string `json:"error"`
	// Attempts is how many times it was tried.
	Attempts int `json:"attempts"`
}

// Command is a command waiting in an instance's outbox. The store keeps
// it encoded; Seq orders an instance's commands (the store assigns it).
type Command struct {
	Seq      int64               `json:"seq"`
	ID       uuid.UUID           `json:"id"`
	Type     string              `json:"type"`
	Data     []byte              `json:"data"`
	Metadata eventstore.Metadata `json:"metadata,omitempty"`
	// Attempts counts failed dispatches; NextAttempt is when the next may
	// run (the commit's Now when enqueued with zero); LastError is the last
	// failure.
	Attempts    int       `json:"attempts,omitempty"`
	NextAttempt time.Time `json:"next_attempt"`
	LastError   string    `json:"last_error,omitempty"`
}

// Deadline is a pending deadline of an instance: its step runs once, at
// Due or later. ID is derived from the instance, the name and the step
// that scheduled it, and namespaces the IDs of the commands its step
// sends.
type Deadline struct {
	Name string    `json:"name"`
	ID   uuid.UUID `json:"id"`
	Due  time.Time `json:"due"`
}

// HeldRecord is a record held back behind a parked instance (or a record
// whose step failed), applied in order once the instance runs again.
type HeldRecord struct {
	Seq    int64             `json:"seq"`
	Record eventstore.Record `json:"record"`
}

// Instance is one instance of a saga as a store keeps it.
type Instance struct {
	Saga      string `json:"saga"`
	ID        string `json:"id"`
	Partition int    `json:"partition"`
	Status    Status `json:"status"`
	// Done is set once a step completed the instance (a done instance
	// whose last commands fail is parked, not done).
	Done      bool      `json:"done,omitempty"`
	State     []byte    `json:"state,omitempty"`
	Version   int64     `json:"version"`
	Park      *Park     `json:"park,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// LastPosition is the feed position of the last record applied: a
	// record at or before it is a duplicate.
	LastPosition eventstore.Position `json:"last_position"`
	// Deadlines are the pending deadlines, the next one first (Load, List
	// and Get fill them in).
	Deadlines []Deadline `json:"deadlines,omitempty"`
	// Held counts the held records (Load, List and Get fill it in).
	Held int `json:"held,omitempty"`
	// Commands and HeldRecords are filled in by Get only.
	Commands    []Command    `json:"commands,omitempty"`
	HeldRecords []HeldRecord `json:"held_records,omitempty"`
}

// Deadline returns the pending deadline called name.
func (in *Instance) Deadline(name string) (Deadline, bool) {
	for _, d := range in.Deadlines {
		if d.Name == name {
			return d, true
		}
	}
	return Deadline{}, false
}

// Update is the change one step makes to one instance. Every field but ID
// and Version is optional.
type Update struct {
	ID string
	// Version is the instance's version as loaded (0: the instance is
	// new). The store refuses the update with a *ConflictError otherwise,
	// and increments it.
	Version int64
	// Partition is the partition of a new instance.
	Partition int
	// State replaces the instance's state unless nil.
	State []byte
	// LastPosition, unless zero, is the record the step applied.
	LastPosition eventstore.Position
	// Complete marks the instance done and drops its deadlines.
	Complete bool
	// Park parks the instance; nil leaves the park as it is (Unpark
	// clears it).
	Park    *Park
	Unpark  bool
	Enqueue []Command
	// Schedule adds or replaces deadlines by name; Cancel drops them.
	Schedule []Deadline
	Cancel   []string
	// Fired is the deadline whose step this is: the store drops it, and
	// refuses the update (*ConflictError) when no deadline of that name
	// and ID is pending: it fired already or was rescheduled.
	Fired *Deadline
	// Sent drops an outbox command (by Seq) whose outcome the step
	// handled; 0 for none.
	Sent int64
	// Hold appends records to the instance's held records; Unhold drops
	// the held record of that Seq (0 for none).
	Hold   []eventstore.Record
	Unhold int64
}

// Commit is one atomic write of a runner: a checkpoint and changes to
// instances of its partition, all or nothing, under its fence.
type Commit struct {
	Fence Fence
	// Checkpoint, unless zero, is the partition's new checkpoint. It must
	// not be before the stored one.
	Checkpoint eventstore.Position
	Updates    []Update
	// Now is the runner's clock, for timestamps of stores without one.
	Now time.Time
}

// DueCommand is an instance's oldest unsent command, due to be sent.
type DueCommand struct {
	Instance string
	Command  Command
}

// DueDeadline is a deadline due to fire.
type DueDeadline struct {
	Instance string
	Deadline Deadline
}

// DueRecord is an instance's oldest held record, ready to be applied.
type DueRecord struct {
	Instance string
	Held     HeldRecord
}

// Filter selects instances for List.
type Filter struct {
	// Status, unless empty, selects one status.
	Status Status
	// After, unless empty, starts the page after this instance ID (IDs are
	// ordered by their bytes).
	After string
	// Limit caps the page (100 when 0).
	Limit int
}

// Store keeps the instances, outboxes, deadlines and checkpoints of sagas.
// Writes of a runner carry its Fence and are refused (*FencedError) once a
// higher token claimed the partition. Implementations are safe for
// concurrent use; sagatest.Run checks the contract.
type Store interface {
	// Claim makes f's token the partition's current one and returns it
	// with the partition's checkpoint. It fails with a *FencedError when a
	// higher token claimed the partition already. A zero token claims the
	// token after the current one (for a runner without a lease).
	Claim(ctx context.Context, f Fence) (Claimed, error)
	// Commit applies c atomically: every update and the checkpoint, or
	// nothing.
	Commit(ctx context.Context, c Commit) error
	// Load returns an instance with its deadlines and held count, and
	// false when it does not exist.
	Load(ctx context.Context, saga, id string) (Instance, bool, error)

	// DueCommands returns, for instances of f's partition that are not
	// parked, the oldest unsent command when it is due at now, up to
	// limit, oldest first.
	DueCommands(ctx context.Context, f Fence, now time.Time, limit int) ([]DueCommand, error)
	// Sent drops a dispatched command from the outbox (nothing when it is
	// gone already).
	Sent(ctx context.Context, f Fence, id string, seq int64) error
	// Failed records a failed dispatch: the attempts, the error and when
	// to try again; with park set it parks the instance on the command.
	Failed(ctx context.Context, f Fence, id string, cmd Command, park bool) error
	// DueDeadlines returns deadlines due at or before horizon of instances
	// of f's partition that are neither parked nor holding records, up to
	// limit, earliest first.
	DueDeadlines(ctx context.Context, f Fence, horizon time.Time, limit int) ([]DueDeadline, error)
	// DueRecords returns the oldest held record of every instance of f's
	// partition that is not parked, up to limit.
	DueRecords(ctx context.Context, f Fence, limit int) ([]DueRecord, error)
	// NextDue returns the earliest time a command or deadline of f's
	// partition falls due (false when none is pending).
	NextDue(ctx context.Context, f Fence) (time.Time, bool, error)

	// List returns a page of instances ordered by ID, each with its
	// deadlines (the next one first) and held count, as Load returns
	// them, but without its commands and held records.
	List(ctx context.Context, saga string, f Filter) ([]Instance, error)
	// Get returns an instance with its commands, deadlines and held
	// records, or an error matching ErrNotFound.
	Get(ctx context.Context, saga, id string) (Instance, error)
	// Count returns how many instances of the saga are in each status.
	Count(ctx context.Context, saga string) (map[Status]int, error)
	// CountPartition returns how many instances of the saga's partition
	// are in each status (the runner's metrics, per partition).
	CountPartition(ctx context.Context, saga string, partition int) (map[Status]int, error)
	// Progress returns where each claimed partition of the saga stands,
	// by partition: for readiness checks and operators.
	Progress(ctx context.Context, saga string) ([]PartitionProgress, error)
	// Retry unparks a parked instance: what it was parked on is tried
	// again at once (attempts start over).
	Retry(ctx context.Context, saga, id string) error
	// Skip unparks a parked instance and drops what it was parked on: the
	// command (never sent), the held record (never applied) or the
	// deadline (never fired).
	Skip(ctx context.Context, saga, id string) error
}

// ValidateCommit checks a commit's fence, IDs and names; stores call it
// before they write.
func ValidateCommit(c Commit) error {
	if err := c.Fence.validate(); err != nil {
		return err
	}
	for _, u := range c.Updates {
		if err := ValidateInstanceID(u.ID); err != nil {
			return err
		}
		if u.Partition < 0 || u.Partition >= MaxPartitions {
			return &InvalidError{Field: "partition", Value: fmt.Sprint(u.Partition), Reason: "out of range"}
		}
		for _, d := range u.Schedule {
			if err := validate("deadline name", d.Name, MaxNameLength); err != nil {
				return err
			}
		}
		for _, n := range u.Cancel {
			if err := validate("deadline name", n, MaxNameLength); err != nil {
				return err
			}
		}
		for _, cmd := range u.Enqueue {
			if cmd.ID == uuid.Nil || cmd.Type == "" {
				return &InvalidError{Field: "command", Value: cmd.Type, Reason: "needs an ID and a type"}
			}
		}
		if u.Park != nil && u.Unpark {
			return &InvalidError{Field: "update", Value: u.ID, Reason: "parks and unparks at once"}
		}
	}
	return nil
}

// ValidateFence checks a fence; stores call it before they read or write
// under it.
func ValidateFence(f Fence) error { return f.validate() }

// ValidateClaim checks the fence given to Claim (its token may be 0).
func ValidateClaim(f Fence) error { return f.validateClaim() }

// ValidateRef checks the saga name and instance ID of a read or an
// operator action.
func ValidateRef(saga, id string) error {
	if err := ValidateName(saga); err != nil {
		return err
	}
	return ValidateInstanceID(id)
}

// DeriveStatus is the status rule every store applies after a write: a
// parked instance is parked (even when done: its last commands failed),
// then done, then waiting while it has deadlines, else running.
func DeriveStatus(done bool, park *Park, deadlines int) Status {
	switch {
	case park != nil:
		return StatusParked
	case done:
		return StatusDone
	case deadlines > 0:
		return StatusWaiting
	}
	return StatusRunning
}
