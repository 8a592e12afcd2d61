package querybus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/eskit/eskit/eventstore"
)

// Sentinel errors. The typed errors below match the corresponding sentinel
// with errors.Is.
var (
	// ErrNilQuery: Dispatch was given a nil query.
	ErrNilQuery = errors.New("querybus: nil query")
	// ErrUnknownQuery: no handler is registered for the query's type.
	ErrUnknownQuery = errors.New("querybus: unknown query")
	// ErrDuplicateHandler: a handler is already registered for the type.
	ErrDuplicateHandler = errors.New("querybus: handler already registered")
	// ErrResultType: the handler's result type is not the one asked for.
	ErrResultType = errors.New("querybus: result type mismatch")
	// ErrPanic: the handler or a middleware panicked.
	ErrPanic = errors.New("querybus: handler panicked")
	// ErrConsistencyTimeout: a required projection position was not reached
	// in time.
	ErrConsistencyTimeout = errors.New("querybus: consistency wait timed out")
	// ErrNoWaiter: a query requires a position but the bus has no
	// CheckpointWaiter.
	ErrNoWaiter = errors.New("querybus: no checkpoint waiter configured")
	// ErrNoProjection: a query requires a position of its projections but
	// was registered without ReadsFrom.
	ErrNoProjection = errors.New("querybus: query reads from no projection")
)

// UnknownQueryError reports a query whose type has no handler.
type UnknownQueryError struct {
	// Query is the query's Go type.
	Query string
}

func (e *UnknownQueryError) Error() string {
	return fmt.Sprintf("querybus: no handler registered for %s", e.Query)
}

// Is makes errors.Is(err, ErrUnknownQuery) true.
func (e *UnknownQueryError) Is(target error) bool { return target == ErrUnknownQuery }

// ResultTypeError reports an Ask whose result type differs from the
// handler's.
type ResultTypeError struct {
	// Query is the query's Go type.
	Query string
	// Want is the type asked for; Got the type the handler answers with.
	Want, Got string
}

func (e *ResultTypeError) Error() string {
	return fmt.Sprintf("querybus: %s answers with %s, not %s", e.Query, e.Got, e.Want)
}

// Is makes errors.Is(err, ErrResultType) true.
func (e *ResultTypeError) Is(target error) bool { return target == ErrResultType }

// PanicError reports a panic in a handler or middleware, recovered by the
// bus.
type PanicError struct {
	// Query is the query's Go type.
	Query string
	// Value is the value passed to panic.
	Value any
	// Stack is the panicking goroutine's stack trace.
	Stack []byte
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("querybus: handler for %s panicked: %v", e.Query, e.Value)
}

// Is makes errors.Is(err, ErrPanic) true.
func (e *PanicError) Is(target error) bool { return target == ErrPanic }

// ConsistencyTimeoutError reports a projection that did not reach the
// required position before the deadline. The query did not run.
type ConsistencyTimeoutError struct {
	// Query is the query's Go type.
	Query string
	// Projection is the projection waited for.
	Projection string
	// Want is the position it had to reach.
	Want eventstore.Position
	// Waited is how long the bus waited in all.
	Waited time.Duration
	// Err is what the waiter returned.
	Err error
}

func (e *ConsistencyTimeoutError) Error() string {
	return fmt.Sprintf("querybus: %s: projection %q did not reach position %s within %s",
		e.Query, e.Projection, e.Want, e.Waited.Round(time.Millisecond))
}

// Unwrap returns the waiter's error.
func (e *ConsistencyTimeoutError) Unwrap() error { return e.Err }

// Is makes errors.Is match ErrConsistencyTimeout and
// context.DeadlineExceeded.
func (e *ConsistencyTimeoutError) Is(target error) bool {
	return target == ErrConsistencyTimeout || target == context.DeadlineExceeded
}
