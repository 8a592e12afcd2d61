// Package dispatch is the machinery the command bus and the query bus
// share: a table of handlers by the message's concrete type, a middleware
// chain around the routing, the checks of a registration, and the errors
// for nil and unknown messages and for panics. Each bus keeps its own
// public types (Handler, Middleware, errors) and describes them in a Spec;
// this package is generic over the handlers' result R and over what a bus
// keeps next to each handler (X).
package dispatch

import (
	"context"
	"fmt"
	"reflect"
	"runtime/debug"
	"sync"
	"time"

	"github.com/eskit/eskit/internal/values"
)

// Handler handles a message of any type. Bus handler types have this
// underlying type, so that they convert to it and back for free.
type Handler[R any] func(ctx context.Context, msg any) (R, error)

// Spec describes a bus: how its errors read and are built, and its hooks.
type Spec[R, X any] struct {
	// Package prefixes registration errors ("commandbus").
	Package string
	// Kind names a message in registration errors ("command").
	Kind string
	// ErrNil is returned by Dispatch for a nil message (or nil pointer).
	ErrNil error
	// ErrDuplicate is wrapped by the error of a second registration for a
	// type.
	ErrDuplicate error
	// Unknown builds the error for a message whose type has no handler.
	Unknown func(msgType string) error
	// Panic builds the error for a panic recovered from a handler or a
	// middleware.
	Panic func(msgType string, value any, stack []byte) error
	// Context, when set, derives the context the chain runs in from the
	// message (after the nil check, before any middleware).
	Context func(ctx context.Context, msg any) context.Context
	// Before, when set, runs innermost, after the handler is found and
	// before it runs; an error it returns is the outcome and the handler
	// does not run.
	Before func(ctx context.Context, msg any, extra X) error
}

type entry[R, X any] struct {
	handler Handler[R]
	extra   X
}

// Bus routes messages to the handlers registered for their dynamic type
// through a middleware chain. It is safe for concurrent use; handlers may be
// added while messages are dispatched.
type Bus[R, X any] struct {
	spec  Spec[R, X]
	chain Handler[R]

	mu      sync.RWMutex
	entries map[reflect.Type]entry[R, X]
}

// New returns a bus described by spec, whose chain is the middleware mws
// (the first outermost) around the routing. H and M are the bus's own
// handler and middleware types.
func New[R, X any, H ~func(context.Context, any) (R, error), M ~func(H) H](spec Spec[R, X], mws []M) *Bus[R, X] {
	b := &Bus[R, X]{spec: spec, entries: make(map[reflect.Type]entry[R, X])}
	h := H(b.route)
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	b.chain = Handler[R](h)
	return b
}

// Check checks a registration for messages of type t: the handler must not
// be nil and t must be a concrete (non-interface) type.
func (b *Bus[R, X]) Check(t reflect.Type, nilHandler bool) error {
	if nilHandler {
		return fmt.Errorf("%s: register %s: nil handler", b.spec.Package, t)
	}
	if t.Kind() == reflect.Interface {
		return fmt.Errorf("%s: register %s: %s type must be concrete, not an interface", b.spec.Package, t, b.spec.Kind)
	}
	return nil
}

// Add registers h (and extra) for messages of type t, which Check
// accepted. A type has one handler: a second one is refused with an error
// wrapping Spec.ErrDuplicate.
func (b *Bus[R, X]) Add(t reflect.Type, h Handler[R], extra X) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.entries[t]; ok {
		return fmt.Errorf("%w: %s", b.spec.ErrDuplicate, t)
	}
	b.entries[t] = entry[R, X]{handler: h, extra: extra}
	return nil
}

// Lookup returns what was registered next to the handler of type t.
func (b *Bus[R, X]) Lookup(t reflect.Type) (X, bool) {
	e, ok := b.lookup(t)
	return e.extra, ok
}

func (b *Bus[R, X]) lookup(t reflect.Type) (entry[R, X], bool) {
	b.mu.RLock()
	e, ok := b.entries[t]
	b.mu.RUnlock()
	return e, ok
}

// Dispatch runs msg through the chain to the handler registered for its
// dynamic type. It returns Spec.ErrNil for a nil message (no middleware
// runs) and the Spec.Panic error when a middleware panics.
func (b *Bus[R, X]) Dispatch(ctx context.Context, msg any) (res R, err error) {
	if values.IsNil(msg) {
		return res, b.spec.ErrNil
	}
	if b.spec.Context != nil {
		ctx = b.spec.Context(ctx, msg)
	}
	defer b.recoverInto(msg, &res, &err)
	return b.chain(ctx, msg)
}

// route is the innermost handler: it finds the message's handler, runs the
// Before hook and the handler, and turns the handler's panic into an error
// (next to the handler, so that every middleware sees it as one).
func (b *Bus[R, X]) route(ctx context.Context, msg any) (res R, err error) {
	e, ok := b.lookup(reflect.TypeOf(msg))
	if !ok {
		return res, b.spec.Unknown(values.TypeName(msg))
	}
	if b.spec.Before != nil {
		if err := b.spec.Before(ctx, msg, e.extra); err != nil {
			return res, err
		}
	}
	defer b.recoverInto(msg, &res, &err)
	return e.handler(ctx, msg)
}

// recoverInto, deferred, turns a panic into the outcome Spec.Panic builds.
func (b *Bus[R, X]) recoverInto(msg any, res *R, err *error) {
	if v := recover(); v != nil {
		var zero R
		*res, *err = zero, b.spec.Panic(values.TypeName(msg), v, debug.Stack())
	}
}

// Timeout is the middleware both buses offer: it gives the rest of the
// chain a context whose deadline is at most d away (an earlier deadline of
// the caller's stays).
func Timeout[R any, H ~func(context.Context, any) (R, error)](d time.Duration) func(next H) H {
	return func(next H) H {
		return func(ctx context.Context, msg any) (R, error) {
			ctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			return next(ctx, msg)
		}
	}
}
