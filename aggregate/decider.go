// Package aggregate is eskit's write side: deciders (pure functions that turn
// a command and the current state into events) and the Repository that
// loads a stream's state (snapshot plus tail), decides, appends with an
// exact expected version, retries on conflict, answers retried commands
// with their original result, and takes snapshots in the background. With
// WithStateCache it keeps recent states in memory and usually handles a
// command in a single round trip to the store.
package aggregate

import (
	"errors"
	"fmt"
)

// Decider is an aggregate as three pure functions over a state S, commands
// C and events E.
//
// Decide must not change the state it is given, and Evolve must return a
// new state rather than change its argument: the repository hands states
// to the background snapshotter and to callers, which read them
// concurrently.
type Decider[S, C, E any] interface {
	// Initial is the state of a stream without events.
	Initial() S
	// Decide returns the events that cmd causes in state, or an error
	// when the command is rejected. Returning no events and no error
	// accepts the command without changing anything.
	Decide(state S, cmd C) ([]E, error)
	// Evolve returns the state after event.
	Evolve(state S, event E) S
}

// ErrNoDecide is returned by DeciderFuncs.Decide when DecideFunc is nil.
var ErrNoDecide = errors.New("aggregate: decider has no decide function")

// DeciderFuncs builds a Decider from three functions, without a named
// type. A nil InitialFunc gives the zero state; a nil EvolveFunc leaves the
// state unchanged; a nil DecideFunc rejects every command with ErrNoDecide.
//
// A composite literal names its type parameters
// (DeciderFuncs[Wallet, any, WalletEvent]{...}); NewDecider infers them from
// the functions.
type DeciderFuncs[S, C, E any] struct {
	InitialFunc func() S
	DecideFunc  func(state S, cmd C) ([]E, error)
	EvolveFunc  func(state S, event E) S
}

var _ Decider[int, int, int] = DeciderFuncs[int, int, int]{}

// NewDecider returns the Decider made of the three functions (see
// DeciderFuncs, also for nil functions). Its type parameters are inferred
// from the functions' signatures:
//
//	counter := aggregate.NewDecider(
//		func() int { return 0 },
//		func(n int, by Add) ([]Added, error) { return []Added{{By: by.N}}, nil },
//		func(n int, e Added) int { return n + e.By },
//	)
//
// A named decider type needs no constructor: NewRepository infers S, C and
// E from its methods.
func NewDecider[S, C, E any](initial func() S, decide func(state S, cmd C) ([]E, error), evolve func(state S, event E) S) DeciderFuncs[S, C, E] {
	return DeciderFuncs[S, C, E]{InitialFunc: initial, DecideFunc: decide, EvolveFunc: evolve}
}

// Initial implements Decider.
func (d DeciderFuncs[S, C, E]) Initial() S {
	if d.InitialFunc == nil {
		var zero S
		return zero
	}
	return d.InitialFunc()
}

// Decide implements Decider.
func (d DeciderFuncs[S, C, E]) Decide(state S, cmd C) ([]E, error) {
	if d.DecideFunc == nil {
		return nil, ErrNoDecide
	}
	return d.DecideFunc(state, cmd)
}

// Evolve implements Decider.
func (d DeciderFuncs[S, C, E]) Evolve(state S, event E) S {
	if d.EvolveFunc == nil {
		return state
	}
	return d.EvolveFunc(state, event)
}

// Fold applies events to state in order with d's Evolve.
func Fold[S, C, E any](d Decider[S, C, E], state S, events ...E) S {
	for _, e := range events {
		state = d.Evolve(state, e)
	}
	return state
}

// ErrRejected matches every error a decider returned: errors.Is(err,
// ErrRejected) tells a rejected command from a failure to load or append.
var ErrRejected = errors.New("aggregate: command rejected")

// RejectedError wraps the error a decider returned for a command; errors.Is
// and errors.As find the decider's error through it.
type RejectedError struct {
	// StreamID is the stream the command was decided on.
	StreamID string
	// Version is the stream's version the decision saw.
	Version int64
	// Err is the decider's error.
	Err error
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("aggregate: command rejected on stream %q at version %d: %v", e.StreamID, e.Version, e.Err)
}

// Unwrap returns the decider's error.
func (e *RejectedError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrRejected) true.
func (e *RejectedError) Is(target error) bool { return target == ErrRejected }

// RetriesExhaustedError reports a command that met a concurrency conflict
// on every attempt the repository made: the first one and the retries
// WithMaxRetries allows. It unwraps to the last conflict, so errors.Is(err,
// eventstore.ErrConcurrency) holds and errors.As finds the
// *eventstore.ConcurrencyError.
//
// Its Retried method reports that the conflict was retried already (when
// Attempts is above 1), so that an outer retry (commandbus.Retry) does not
// retry it again: conflicts are retried by the innermost layer that
// retries them, and retries never multiply.
type RetriesExhaustedError struct {
	// StreamID is the stream the command was sent to.
	StreamID string
	// Attempts is the number of appends tried, the first included.
	Attempts int
	// Err is the last conflict.
	Err error
}

func (e *RetriesExhaustedError) Error() string {
	return fmt.Sprintf("aggregate: stream %q: gave up after %d attempts: %v", e.StreamID, e.Attempts, e.Err)
}

// Unwrap returns the last conflict.
func (e *RetriesExhaustedError) Unwrap() error { return e.Err }

// Retried reports whether the repository retried the command (Attempts
// above 1).
func (e *RetriesExhaustedError) Retried() bool { return e.Attempts > 1 }
