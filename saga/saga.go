package saga

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/eskit/eskit/eventstore"
)

// Definition declares a saga: its name, the events it reacts to (by type
// or by stream category), how each names the instance it belongs to, the
// state S each instance keeps (encoded as JSON), its deadlines and what it
// does with a rejected command. Build it with New; it is immutable and
// safe for concurrent use.
type Definition[S any] struct {
	name       string
	events     *eventstore.Registry
	commands   *eventstore.Registry
	byType     map[string]*handler[S]
	byCategory map[string]*handler[S]
	deadlines  map[string]func(context.Context, *Step[S]) error
	onRejected func(context.Context, *Step[S], Rejection) error
	initial    func() S
}

type handler[S any] struct {
	what      string // event type or "category " + name
	starts    bool
	typed     bool // decode the payload
	correlate func(rec eventstore.Record, ev any) string
	handle    func(ctx context.Context, s *Step[S], rec eventstore.Record, ev any) error
}

// Option declares one part of a saga (see On, OnCategory, OnDeadline,
// OnRejected, Initial).
type Option[S any] func(d *Definition[S]) error

// HandlerOption configures one event handler.
type HandlerOption func(*handlerConfig)

type handlerConfig struct{ starts bool }

// Starts lets the handler start an instance: a record for an instance
// that does not exist yet is handed to a starting handler only, and
// ignored by the others.
func Starts() HandlerOption { return func(c *handlerConfig) { c.starts = true } }

// On reacts to the events of Go type E (registered in the saga's event
// registry). correlate names the instance a record belongs to ("" for
// none: the record is not this saga's); handle takes the step.
func On[E, S any](correlate func(rec eventstore.Record, e E) string, handle func(ctx context.Context, s *Step[S], e E) error, opts ...HandlerOption) Option[S] {
	return func(d *Definition[S]) error {
		if correlate == nil || handle == nil {
			return &InvalidError{Field: "handler", Value: reflect.TypeFor[E]().String(), Reason: "nil correlate or handle"}
		}
		var zero E
		name, err := d.events.Name(zero)
		if err != nil {
			return fmt.Errorf("saga %q: handler of %T: %w", d.name, zero, err)
		}
		if _, dup := d.byType[name]; dup {
			return &InvalidError{Field: "handler", Value: name, Reason: "two handlers of the event type"}
		}
		var c handlerConfig
		for _, o := range opts {
			o(&c)
		}
		d.byType[name] = &handler[S]{
			what: name, starts: c.starts, typed: true,
			correlate: func(rec eventstore.Record, ev any) string { return correlate(rec, ev.(E)) },
			handle: func(ctx context.Context, s *Step[S], _ eventstore.Record, ev any) error {
				return handle(ctx, s, ev.(E))
			},
		}
		return nil
	}
}

// OnCategory reacts to every record of the streams of a category (the
// stream ID up to its first '-', see Category) whose type no On handler
// takes. handle gets the record and its decoded payload (nil when the
// type is not registered).
func OnCategory[S any](category string, correlate func(rec eventstore.Record) string, handle func(ctx context.Context, s *Step[S], rec eventstore.Record, ev any) error, opts ...HandlerOption) Option[S] {
	return func(d *Definition[S]) error {
		if category == "" || strings.Contains(category, "-") {
			return &InvalidError{Field: "category", Value: category, Reason: "empty or contains '-'"}
		}
		if correlate == nil || handle == nil {
			return &InvalidError{Field: "handler", Value: category, Reason: "nil correlate or handle"}
		}
		if _, dup := d.byCategory[category]; dup {
			return &InvalidError{Field: "handler", Value: category, Reason: "two handlers of the category"}
		}
		var c handlerConfig
		for _, o := range opts {
			o(&c)
		}
		d.byCategory[category] = &handler[S]{
			what: "category " + category, starts: c.starts,
			correlate: func(rec eventstore.Record, _ any) string { return correlate(rec) },
			handle:    handle,
		}
		return nil
	}
}

// OnDeadline declares the deadline called name: handle is its step, run
// once when it falls due (see Step.Schedule).
func OnDeadline[S any](name string, handle func(ctx context.Context, s *Step[S]) error) Option[S] {
	return func(d *Definition[S]) error {
		if err := validate("deadline name", name, MaxNameLength); err != nil {
			return err
		}
		if handle == nil {
			return &InvalidError{Field: "deadline", Value: name, Reason: "nil handler"}
		}
		if _, dup := d.deadlines[name]; dup {
			return &InvalidError{Field: "deadline", Value: name, Reason: "declared twice"}
		}
		d.deadlines[name] = handle
		return nil
	}
}

// Rejection is a command the saga sent that its handler refused for good
// (see WithPermanent): the input of the OnRejected step.
type Rejection struct {
	Command   any
	CommandID uuid.UUID
	Err       error
}

// OnRejected declares the step run when a command is rejected for good
// (by default: the error matches aggregate.ErrRejected). It usually sends
// compensating commands. Without it, a rejected command parks the
// instance.
func OnRejected[S any](handle func(ctx context.Context, s *Step[S], r Rejection) error) Option[S] {
	return func(d *Definition[S]) error {
		if handle == nil {
			return &InvalidError{Field: "rejection handler", Reason: "nil"}
		}
		d.onRejected = handle
		return nil
	}
}

// Initial sets the state of a new instance (the zero S otherwise).
func Initial[S any](initial func() S) Option[S] {
	return func(d *Definition[S]) error {
		d.initial = initial
		return nil
	}
}

// New declares the saga called name. events decodes the records it reacts
// to; commands encodes the commands it sends (every command type must be
// registered there: the outbox keeps them encoded until they are sent).
// One registry may serve both when the names do not clash.
func New[S any](name string, events, commands *eventstore.Registry, opts ...Option[S]) (*Definition[S], error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	if events == nil || commands == nil {
		return nil, &InvalidError{Field: "registry", Value: name, Reason: "a saga needs an event and a command registry"}
	}
	d := &Definition[S]{
		name: name, events: events, commands: commands,
		byType:     map[string]*handler[S]{},
		byCategory: map[string]*handler[S]{},
		deadlines:  map[string]func(context.Context, *Step[S]) error{},
	}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(d); err != nil {
			return nil, fmt.Errorf("saga %q: %w", name, err)
		}
	}
	if len(d.byType)+len(d.byCategory) == 0 {
		return nil, &InvalidError{Field: "saga", Value: name, Reason: "reacts to no event"}
	}
	starts := false
	for _, h := range d.byType {
		starts = starts || h.starts
	}
	for _, h := range d.byCategory {
		starts = starts || h.starts
	}
	if !starts {
		return nil, &InvalidError{Field: "saga", Value: name, Reason: "no handler Starts an instance"}
	}
	return d, nil
}

// Name returns the saga's name.
func (d *Definition[S]) Name() string { return d.name }

// Category returns the category of a stream: its ID up to the first '-'
// (the whole ID when it has none).
func Category(streamID string) string {
	c, _, _ := strings.Cut(streamID, "-")
	return c
}

// route returns the handler of a record: its type's, else its category's.
func (d *Definition[S]) route(rec eventstore.Record) *handler[S] {
	if h := d.byType[rec.Type]; h != nil {
		return h
	}
	return d.byCategory[Category(rec.StreamID)]
}

// StepID returns the ID of the step that applies the event eventID to an
// instance: the namespace of the IDs of the step's commands and
// deadlines.
func StepID(saga, instance string, eventID uuid.UUID) uuid.UUID {
	return uuid.NewSHA1(eventID, []byte("saga\x00"+saga+"\x00"+instance))
}

// CommandID returns the ID of the index-th command (from 0) a step sends:
// the UUIDv5 of the index in the step's namespace. A step run again after
// a crash sends the same IDs, which the command bus and the aggregate
// repository recognise.
func CommandID(step uuid.UUID, index int) uuid.UUID {
	return uuid.NewSHA1(step, []byte("command\x00"+strconv.Itoa(index)))
}

// DeadlineID returns the ID of the deadline called name scheduled by the
// step step: the namespace of the commands the deadline's step sends.
func DeadlineID(step uuid.UUID, name string) uuid.UUID {
	return uuid.NewSHA1(step, []byte("deadline\x00"+name))
}

// RejectionStepID returns the ID of the step that handles the rejection
// of the command commandID.
func RejectionStepID(commandID uuid.UUID) uuid.UUID {
	return uuid.NewSHA1(commandID, []byte("rejected"))
}

// Step is one step of one instance: the handler reads and changes the
// state and says what to send, schedule, cancel or whether the instance
// is complete. Nothing happens until the handler returns nil: then the
// engine commits it all at once, with the checkpoint. A Step is valid
// during its handler only.
type Step[S any] struct {
	saga     string
	id       string
	isNew    bool
	state    S
	rec      *eventstore.Record
	deadline *Deadline
	at       time.Time
	ns       uuid.UUID
	commands *eventstore.Registry
	known    map[string]bool // deadline names declared

	pending  map[string]Deadline // the instance's deadlines after the step
	sends    []Command
	schedule map[string]Deadline
	cancel   map[string]bool
	complete bool
	errs     []error
}

// ID returns the instance's ID.
func (s *Step[S]) ID() string { return s.id }

// Saga returns the saga's name.
func (s *Step[S]) Saga() string { return s.saga }

// New reports whether this step starts the instance.
func (s *Step[S]) New() bool { return s.isNew }

// State returns the instance's state, to read and change in place.
func (s *Step[S]) State() *S { return &s.state }

// SetState replaces the instance's state.
func (s *Step[S]) SetState(v S) { s.state = v }

// Record returns the record the step applies (false for the step of a
// deadline or a rejection).
func (s *Step[S]) Record() (eventstore.Record, bool) {
	if s.rec == nil {
		return eventstore.Record{}, false
	}
	return *s.rec, true
}

// Deadline returns the deadline whose step this is (false otherwise).
func (s *Step[S]) Deadline() (Deadline, bool) {
	if s.deadline == nil {
		return Deadline{}, false
	}
	return *s.deadline, true
}

// Time is the step's time: when its record was written, or when its
// deadline fell due. After counts from it, so that a step run again after
// a crash schedules the same instant.
func (s *Step[S]) Time() time.Time { return s.at }

// Send queues cmd to be sent once the step commits and returns its ID:
// derived from the step (see CommandID), so the same step always sends
// the same IDs. The command's type must be registered in the saga's
// command registry; otherwise the step fails.
func (s *Step[S]) Send(cmd any) uuid.UUID {
	id := CommandID(s.ns, len(s.sends))
	md := eventstore.Metadata{
		eventstore.MetaCorrelationID: s.id,
		eventstore.MetaCausationID:   s.ns.String(),
	}
	if s.rec != nil {
		md[eventstore.MetaCausationID] = s.rec.ID.String()
		if c := s.rec.Metadata.Get(eventstore.MetaCorrelationID); c != "" {
			md[eventstore.MetaCorrelationID] = c
		}
	}
	ev, err := s.commands.Encode(cmd, md)
	if err != nil {
		s.errs = append(s.errs, fmt.Errorf("send %T: %w", cmd, err))
		s.sends = append(s.sends, Command{}) // keep later indexes stable
		return id
	}
	s.sends = append(s.sends, Command{ID: id, Type: ev.Type, Data: ev.Data, Metadata: ev.Metadata})
	return id
}

// Schedule sets the deadline called name (declared with OnDeadline) to
// fall due at at, replacing a pending one of that name.
func (s *Step[S]) Schedule(name string, at time.Time) {
	if !s.known[name] {
		s.errs = append(s.errs, &InvalidError{Field: "deadline", Value: name, Reason: "not declared with OnDeadline"})
		return
	}
	d := Deadline{Name: name, ID: DeadlineID(s.ns, name), Due: at.UTC()}
	if s.schedule == nil {
		s.schedule = map[string]Deadline{}
	}
	s.schedule[name] = d
	delete(s.cancel, name)
	s.pending[name] = d
}

// After sets the deadline called name to fall due d after the step's
// Time.
func (s *Step[S]) After(name string, d time.Duration) { s.Schedule(name, s.at.Add(d)) }

// Cancel drops the pending deadline called name (nothing when none is).
func (s *Step[S]) Cancel(name string) {
	delete(s.schedule, name)
	if _, ok := s.pending[name]; !ok {
		return
	}
	delete(s.pending, name)
	if s.cancel == nil {
		s.cancel = map[string]bool{}
	}
	s.cancel[name] = true
}

// Pending returns when the deadline called name falls due, and false when
// it is not pending.
func (s *Step[S]) Pending(name string) (time.Time, bool) {
	d, ok := s.pending[name]
	return d.Due, ok
}

// Complete marks the instance done once the step commits: its deadlines
// are dropped and later records for it ignored; the commands of this step
// are still sent.
func (s *Step[S]) Complete() { s.complete = true }

// Completed reports whether Complete was called.
func (s *Step[S]) Completed() bool { return s.complete }

// err returns the step's own errors (bad sends or deadlines).
func (s *Step[S]) err() error { return errors.Join(s.errs...) }
