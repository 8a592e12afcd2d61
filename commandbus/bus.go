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
//		commandbus.Retry(commandbus.RetryPolicy{}), // retries conflicts and transient failures
//	))
//
// Retry does not retry what was retried already (the aggregate repository
// retries its own conflicts): see Retry for the rule.
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
// metadata. HandleWith builds such a handler from a repository and a
// function naming the stream and the decider's command.
//
// # Shutdown
//
// A Bus starts no goroutines and holds no connections: it has nothing to
// close. Stop its callers first (http.Server.Shutdown waits for the
// requests in flight, and so for their Dispatch calls), then close what the
// handlers use: repositories (aggregate.Repository.Close saves the queued
// snapshots), the idempotency store's client, the event store.
package commandbus

import (
	"context"
	"reflect"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/internal/dispatch"
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
	d          *dispatch.Bus[Result, struct{}]
}

// spec describes the command bus to the dispatcher it shares with the
// query bus.
var spec = dispatch.Spec[Result, struct{}]{
	Package:      "commandbus",
	Kind:         "command",
	ErrNil:       ErrNilCommand,
	ErrDuplicate: ErrDuplicateHandler,
	Unknown:      func(cmd string) error { return &UnknownCommandError{Command: cmd} },
	Panic: func(cmd string, v any, stack []byte) error {
		return &PanicError{Command: cmd, Value: v, Stack: stack}
	},
	Context: func(ctx context.Context, cmd any) context.Context {
		if id, ok := idOf(cmd); ok {
			return WithCommandID(ctx, id)
		}
		return ctx
	},
}

// New returns a bus with the given options.
func New(opts ...Option) *Bus {
	b := &Bus{}
	for _, o := range opts {
		o(b)
	}
	b.d = dispatch.New(spec, b.middleware)
	return b
}

// Register registers h as the handler of commands of type C. C must be a
// concrete (non-interface) type, and only one handler may be registered per
// type: a second registration returns an error matching
// ErrDuplicateHandler.
func Register[C any](bus *Bus, h func(ctx context.Context, cmd C) (Result, error)) error {
	t := reflect.TypeFor[C]()
	if err := bus.d.Check(t, h == nil); err != nil {
		return err
	}
	return bus.d.Add(t, func(ctx context.Context, cmd any) (Result, error) {
		return h(ctx, cmd.(C))
	}, struct{}{})
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
func (b *Bus) Dispatch(ctx context.Context, cmd any) (Result, error) {
	return b.d.Dispatch(ctx, cmd)
}
