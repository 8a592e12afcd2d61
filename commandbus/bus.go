// Package commandbus dispatches commands to typed handlers through a chain of
// middleware.
//
// One handler is registered per command type with Register; Dispatch (or the
// typed Send) finds it by the command's dynamic type. A handler returns a
// Result whose Position is a consistency token: hand it to the query side
// (querybus.WithMinPosition) to read your own writes.
//
// # Middleware
//
// A Middleware wraps a Handler. The middleware given to New run in the order
// given: the first is the outermost, it sees the command first and the result
// last. The recommended order of the built-ins is
//
//	commandbus.New(commandbus.WithMiddleware(
//		commandbus.Logging(logger),        // sees every outcome and the total duration
//		commandbus.Validation(),           // rejects invalid commands before any work
//		commandbus.Idempotency(store),     // one execution per command ID
//		commandbus.Timeout(5*time.Second), // bounds the execution, retries included
//		commandbus.Retry(commandbus.RetryPolicy{}), // retries concurrency conflicts
//	))
//
// Handler panics are recovered next to the handler, so every middleware sees
// them as a *PanicError; a panic in a middleware is recovered by Dispatch.
// Unknown command types reach the middleware too (as an *UnknownCommandError
// returned by the innermost handler); a nil command is rejected by Dispatch
// before any middleware runs.
//
// # Identity and metadata
//
// A command carries an ID when it implements Identified, or when the context
// carries one (WithCommandID); the command's own ID wins. Dispatch puts the
// ID into the handler's context, so a handler built on the aggregate
// repository passes CommandIDFrom(ctx) on as its command ID option and the
// events get IDs derived from it: a retried command is then recognised by the
// store. Correlation and causation IDs travel in the context too
// (WithCorrelationID, WithCausationID); MetadataFrom turns them into event
// metadata.
package commandbus

import (
	"context"
	"fmt"
	"reflect"
	"runtime/debug"
	"sync"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/internal/values"
)

// Result is the outcome of a command.
type Result struct {
	// StreamID is the stream the command was handled on.
	StreamID string `json:"stream_id,omitempty"`
	// Version is the stream's version after the command.
	Version int64 `json:"version,omitempty"`
	// Position is the feed position of the command's last event (zero when
	// it caused none). It is the consistency token for read-your-writes.
	Position eventstore.Position `json:"position"`
	// Duplicate is true when the command had already been handled and this
	// is the original outcome, not a new execution.
	Duplicate bool `json:"duplicate,omitempty"`
}

// Handler handles a command of any type. Middleware wrap Handlers.
type Handler func(ctx context.Context, cmd any) (Result, error)

// Middleware wraps a Handler with behaviour of its own (logging, retries,
// ...). It calls next to go on, or returns without calling it to
// short-circuit.
type Middleware func(next Handler) Handler

// Option configures a Bus.
type Option func(*Bus)

// WithMiddleware appends middleware to the bus's chain. The first middleware
// is the outermost.
func WithMiddleware(mw ...Middleware) Option {
	return func(b *Bus) { b.middleware = append(b.middleware, mw...) }
}

// Bus routes commands to their handlers. It is safe for concurrent use;
// handlers may be registered while commands are dispatched.
type Bus struct {
	middleware []Middleware
	chain      Handler

	mu       sync.RWMutex
	handlers map[reflect.Type]Handler
}

// New returns a bus with the given options.
func New(opts ...Option) *Bus {
	b := &Bus{handlers: make(map[reflect.Type]Handler)}
	for _, o := range opts {
		o(b)
	}
	h := Handler(b.route)
	for i := len(b.middleware) - 1; i >= 0; i-- {
		h = b.middleware[i](h)
	}
	b.chain = h
	return b
}

// Register registers h as the handler of commands of type C. C must be a
// concrete (non-interface) type, and only one handler may be registered per
// type: a second registration returns an error matching
// ErrDuplicateHandler.
func Register[C any](bus *Bus, h func(ctx context.Context, cmd C) (Result, error)) error {
	t := reflect.TypeFor[C]()
	if h == nil {
		return fmt.Errorf("commandbus: register %s: nil handler", t)
	}
	if t.Kind() == reflect.Interface {
		return fmt.Errorf("commandbus: register %s: command type must be concrete, not an interface", t)
	}
	bus.mu.Lock()
	defer bus.mu.Unlock()
	if _, ok := bus.handlers[t]; ok {
		return fmt.Errorf("%w: %s", ErrDuplicateHandler, t)
	}
	bus.handlers[t] = func(ctx context.Context, cmd any) (Result, error) {
		return h(ctx, cmd.(C))
	}
	return nil
}

// Send dispatches cmd; it is Dispatch with the command's type checked at
// compile time.
func Send[C any](ctx context.Context, bus *Bus, cmd C) (Result, error) {
	return bus.Dispatch(ctx, cmd)
}

// Dispatch runs cmd through the middleware to the handler registered for its
// dynamic type.
//
// It returns ErrNilCommand for a nil command (or nil pointer), an
// *UnknownCommandError when no handler is registered for the type, and a
// *PanicError when the handler or a middleware panics. When the command
// carries an ID (see Identified), the handler's context carries it too.
func (b *Bus) Dispatch(ctx context.Context, cmd any) (res Result, err error) {
	if values.IsNil(cmd) {
		return Result{}, ErrNilCommand
	}
	if id, ok := idOf(cmd); ok {
		ctx = WithCommandID(ctx, id)
	}
	defer func() {
		if v := recover(); v != nil {
			res, err = Result{}, &PanicError{Command: values.TypeName(cmd), Value: v, Stack: debug.Stack()}
		}
	}()
	return b.chain(ctx, cmd)
}

// route is the innermost handler: it finds the command's handler and runs
// it, turning a panic into a *PanicError.
func (b *Bus) route(ctx context.Context, cmd any) (res Result, err error) {
	b.mu.RLock()
	h, ok := b.handlers[reflect.TypeOf(cmd)]
	b.mu.RUnlock()
	if !ok {
		return Result{}, &UnknownCommandError{Command: values.TypeName(cmd)}
	}
	defer func() {
		if v := recover(); v != nil {
			res, err = Result{}, &PanicError{Command: values.TypeName(cmd), Value: v, Stack: debug.Stack()}
		}
	}()
	return h(ctx, cmd)
}
