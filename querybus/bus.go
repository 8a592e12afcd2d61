// Package querybus dispatches queries to typed handlers through a chain of
// middleware, and gives callers read-your-writes on eventually consistent
// read models.
//
// A handler is registered per query type with Register, optionally naming
// the projections its read model comes from (ReadsFrom). Ask runs a query
// and returns its typed result.
//
// # Read-your-writes
//
// A command's result carries the feed Position of its last event. A caller
// that must see its own write asks with that position:
//
//	ctx = querybus.WithMinPosition(ctx, "", res.Position)
//	balance, err := querybus.Ask[GetBalance, Balance](ctx, bus, GetBalance{Account: "42"})
//
// Before running the handler, the bus waits, through its CheckpointWaiter,
// until every projection the query reads from has processed the position (a
// named projection can be required instead of "", the query's own ones).
// The wait is bounded by the context's deadline or, when it has none, by the
// bus's wait timeout (WithWaitTimeout); when it runs out, the query fails
// with a *ConsistencyTimeoutError.
//
// # Middleware
//
// The middleware given to New run in the order given: the first is the
// outermost. The read-your-writes wait happens inside the chain, just before
// the handler, so a Timeout middleware bounds the wait and the handler
// together, and Logging times both. Handler panics are recovered as a
// *PanicError.
//
// # Shutdown
//
// A Bus starts no goroutines and holds no connections: it has nothing to
// close. A read-your-writes wait ends with its context, so stop serving
// queries (http.Server.Shutdown waits for those in flight) before stopping
// what the CheckpointWaiter watches, then close the read models' clients.
package querybus

import (
	"context"
	"fmt"
	"reflect"
	"time"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/internal/dispatch"
	"github.com/eskit/eskit/internal/values"
)

// Handler handles a query of any type. Middleware wrap Handlers.
type Handler func(ctx context.Context, q any) (any, error)

// Middleware wraps a Handler with behaviour of its own.
type Middleware func(next Handler) Handler

// CheckpointWaiter waits until a projection's checkpoint reaches a feed
// position. The projection runner implements it.
type CheckpointWaiter interface {
	// WaitFor returns nil once projection has processed every event up to
	// and including pos, or an error (the context's when it ends first).
	WaitFor(ctx context.Context, projection string, pos eventstore.Position) error
}

// CheckpointWaiterFunc adapts a function to CheckpointWaiter.
type CheckpointWaiterFunc func(ctx context.Context, projection string, pos eventstore.Position) error

// WaitFor calls f.
func (f CheckpointWaiterFunc) WaitFor(ctx context.Context, projection string, pos eventstore.Position) error {
	return f(ctx, projection, pos)
}

// DefaultWaitTimeout bounds a read-your-writes wait whose context has no
// deadline, unless WithWaitTimeout sets another bound.
const DefaultWaitTimeout = 5 * time.Second

// Option configures a Bus.
type Option func(*Bus)

// WithMiddleware appends middleware to the bus's chain. The first middleware
// is the outermost.
func WithMiddleware(mw ...Middleware) Option {
	return func(b *Bus) { b.middleware = append(b.middleware, mw...) }
}

// WithWaiter sets the CheckpointWaiter used for read-your-writes. Without
// one, a query that requires a position fails with ErrNoWaiter.
func WithWaiter(w CheckpointWaiter) Option {
	return func(b *Bus) { b.waiter = w }
}

// WithWaitTimeout bounds read-your-writes waits whose context has no
// deadline (DefaultWaitTimeout otherwise).
func WithWaitTimeout(d time.Duration) Option {
	return func(b *Bus) { b.waitTimeout = d }
}

// Bus routes queries to their handlers. It is safe for concurrent use;
// handlers may be registered while queries run.
type Bus struct {
	middleware  []Middleware
	waiter      CheckpointWaiter
	waitTimeout time.Duration
	d           *dispatch.Bus[any, *entry]
}

// entry is what the bus keeps next to a query's handler.
type entry struct {
	result reflect.Type
	reads  []string
}

// New returns a bus with the given options.
func New(opts ...Option) *Bus {
	b := &Bus{waitTimeout: DefaultWaitTimeout}
	for _, o := range opts {
		o(b)
	}
	if b.waitTimeout <= 0 {
		b.waitTimeout = DefaultWaitTimeout
	}
	b.d = dispatch.New(dispatch.Spec[any, *entry]{
		Package:      "querybus",
		Kind:         "query",
		ErrNil:       ErrNilQuery,
		ErrDuplicate: ErrDuplicateHandler,
		Unknown:      func(q string) error { return &UnknownQueryError{Query: q} },
		Panic: func(q string, v any, stack []byte) error {
			return &PanicError{Query: q, Value: v, Stack: stack}
		},
		// The read-your-writes wait, just before the handler.
		Before: b.waitFor,
	}, b.middleware)
	return b
}

// RegisterOption configures one query registration.
type RegisterOption func(*entry)

// ReadsFrom names the projections whose read models the query's handler
// reads, so that WithMinPosition(ctx, "", pos) waits for them.
func ReadsFrom(projections ...string) RegisterOption {
	return func(e *entry) { e.reads = append(e.reads, projections...) }
}

// Register registers h as the handler of queries of type Q, answering with
// an R. Q must be a concrete (non-interface) type, and only one handler may
// be registered per type: a second registration returns an error matching
// ErrDuplicateHandler.
func Register[Q, R any](bus *Bus, h func(ctx context.Context, q Q) (R, error), opts ...RegisterOption) error {
	t := reflect.TypeFor[Q]()
	if err := bus.d.Check(t, h == nil); err != nil {
		return err
	}
	e := &entry{result: reflect.TypeFor[R]()}
	for _, o := range opts {
		o(e)
	}
	for _, p := range e.reads {
		if p == "" {
			return fmt.Errorf("querybus: register %s: empty projection name", t)
		}
	}
	return bus.d.Add(t, func(ctx context.Context, q any) (any, error) { return h(ctx, q.(Q)) }, e)
}

// Ask runs q and returns its result as an R. When the handler registered
// for Q answers with another type than R, Ask returns a *ResultTypeError
// without running it.
func Ask[Q, R any](ctx context.Context, bus *Bus, q Q) (R, error) {
	var zero R
	want := reflect.TypeFor[R]()
	if e, ok := bus.d.Lookup(reflect.TypeOf(q)); ok && !e.result.AssignableTo(want) {
		return zero, &ResultTypeError{Query: values.TypeName(q), Want: want.String(), Got: e.result.String()}
	}
	v, err := bus.Dispatch(ctx, q)
	if err != nil {
		return zero, err
	}
	if v == nil {
		return zero, nil
	}
	r, ok := v.(R)
	if !ok {
		return zero, &ResultTypeError{Query: values.TypeName(q), Want: want.String(), Got: reflect.TypeOf(v).String()}
	}
	return r, nil
}

// Dispatch runs q through the middleware to the handler registered for its
// dynamic type, after waiting for the positions the context requires (see
// WithMinPosition).
//
// It returns ErrNilQuery for a nil query (or nil pointer), an
// *UnknownQueryError when no handler is registered for the type, a
// *ConsistencyTimeoutError when a required position was not reached in
// time, and a *PanicError when the handler or a middleware panics.
func (b *Bus) Dispatch(ctx context.Context, q any) (any, error) {
	return b.d.Dispatch(ctx, q)
}
