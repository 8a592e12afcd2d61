package eventstore

import (
	"errors"
	"fmt"

	"github.com/google/uuid"
)

// Sentinel errors. Match them with errors.Is; the typed errors below carry
// the details and match the corresponding sentinel.
var (
	// ErrConcurrency: the stream's version did not satisfy the expected
	// version, or (for appends inside a caller's transaction) the append
	// could not keep the feed's per-stream order. Retrying after reloading
	// the stream is safe.
	ErrConcurrency = errors.New("eventstore: concurrency conflict")
	// ErrStreamNotFound: the stream has no events.
	ErrStreamNotFound = errors.New("eventstore: stream not found")
	// ErrEventNotFound: no event has the ID.
	ErrEventNotFound = errors.New("eventstore: event not found")
	// ErrInvalidArgument: the request is malformed (empty or oversized
	// stream ID, empty event type, missing payload, ...). Nothing was written.
	ErrInvalidArgument = errors.New("eventstore: invalid argument")
	// ErrDuplicateEvent: an event ID already exists in the store, and the
	// append is not an exact repeat of an earlier append.
	ErrDuplicateEvent = errors.New("eventstore: duplicate event ID")
	// ErrUnknownEventType: a stored event's type is not registered.
	ErrUnknownEventType = errors.New("eventstore: unknown event type")
	// ErrDecode: a stored payload could not be decoded or upcast.
	ErrDecode = errors.New("eventstore: cannot decode event")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("eventstore: store closed")
	// ErrTransient: the store could not serve the request for a reason a
	// retry can resolve: a write refused by a serialization failure or a
	// deadlock, a read whose connection was lost or refused (the server
	// restarting, the session terminated). Nothing was written.
	ErrTransient = errors.New("eventstore: transient failure")
	// ErrOutcomeUnknown: the connection to the store broke while the write
	// was being committed: it may or may not have been applied.
	// OutcomeUnknownError carries the cause. Retrying with the same event
	// IDs (the repository derives them from the command ID) is safe: a
	// write that was applied is recognised as a repeat.
	ErrOutcomeUnknown = errors.New("eventstore: outcome of the write unknown")
)

// OutcomeUnknownError reports a write whose outcome cannot be known. It
// matches ErrOutcomeUnknown, and unwraps to the cause (a context error
// stays matchable).
type OutcomeUnknownError struct {
	Err error
}

func (e *OutcomeUnknownError) Error() string {
	return "eventstore: the write may or may not have been applied (the connection broke while it was committed): " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *OutcomeUnknownError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrOutcomeUnknown) true.
func (e *OutcomeUnknownError) Is(target error) bool { return target == ErrOutcomeUnknown }

// ConcurrencyError reports a failed expected-version check.
type ConcurrencyError struct {
	Stream   string
	Expected ExpectedVersion
	// Actual is the stream's version at the time of the check.
	Actual int64
	// Reason is set when the conflict is not a version mismatch (for
	// example an append in a caller's transaction whose transaction ID is
	// older than the stream's last event).
	Reason string
}

func (e *ConcurrencyError) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("eventstore: concurrency conflict on stream %q: %s", e.Stream, e.Reason)
	}
	return fmt.Sprintf("eventstore: concurrency conflict on stream %q: expected version %s, actual %d",
		e.Stream, e.Expected, e.Actual)
}

// Is makes errors.Is(err, ErrConcurrency) true.
func (e *ConcurrencyError) Is(target error) bool { return target == ErrConcurrency }

// StreamNotFoundError reports a read of a stream that has no events.
type StreamNotFoundError struct{ Stream string }

func (e *StreamNotFoundError) Error() string {
	return fmt.Sprintf("eventstore: stream %q not found", e.Stream)
}

// Is makes errors.Is(err, ErrStreamNotFound) true.
func (e *StreamNotFoundError) Is(target error) bool { return target == ErrStreamNotFound }

// InvalidArgumentError reports a malformed request.
type InvalidArgumentError struct {
	// Field names what is wrong, e.g. "stream ID" or "events[2].Type".
	Field  string
	Reason string
}

func (e *InvalidArgumentError) Error() string {
	return fmt.Sprintf("eventstore: invalid argument: %s: %s", e.Field, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidArgument) true.
func (e *InvalidArgumentError) Is(target error) bool { return target == ErrInvalidArgument }

// DuplicateEventError reports an event ID that is already stored elsewhere
// than the append claims.
type DuplicateEventError struct {
	EventID uuid.UUID
	// Stream is the stream the existing event belongs to, when known.
	Stream string
}

func (e *DuplicateEventError) Error() string {
	if e.Stream != "" {
		return fmt.Sprintf("eventstore: event ID %s already stored in stream %q", e.EventID, e.Stream)
	}
	return fmt.Sprintf("eventstore: event ID %s already stored", e.EventID)
}

// Is makes errors.Is(err, ErrDuplicateEvent) true.
func (e *DuplicateEventError) Is(target error) bool { return target == ErrDuplicateEvent }

// UnknownEventTypeError reports a stored event whose type is not registered.
type UnknownEventTypeError struct {
	Type    string
	Stream  string
	Version int64
}

func (e *UnknownEventTypeError) Error() string {
	return fmt.Sprintf("eventstore: unknown event type %q (stream %q, version %d)", e.Type, e.Stream, e.Version)
}

// Is makes errors.Is(err, ErrUnknownEventType) true.
func (e *UnknownEventTypeError) Is(target error) bool { return target == ErrUnknownEventType }

// DecodeError reports a payload that could not be decoded or upcast.
type DecodeError struct {
	Type    string
	Stream  string
	Version int64
	Err     error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("eventstore: cannot decode event type %q (stream %q, version %d): %v",
		e.Type, e.Stream, e.Version, e.Err)
}

// Unwrap returns the codec's or upcaster's error.
func (e *DecodeError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrDecode) true.
func (e *DecodeError) Is(target error) bool { return target == ErrDecode }

// IsRetryable reports whether an append that failed with err may succeed
// when retried after reloading state: true for concurrency conflicts and
// transient failures (serialization failures, deadlocks), which wrote
// nothing.
func IsRetryable(err error) bool {
	return errors.Is(err, ErrConcurrency) || errors.Is(err, ErrTransient)
}
