package commandbus

import (
	"context"

	"github.com/google/uuid"

	"github.com/eskit/eskit/eventstore"
)

// Identified is implemented by commands that carry their own ID. A non-nil
// ID identifies the command for idempotency and becomes the causation ID of
// the events it causes.
type Identified interface {
	CommandID() uuid.UUID
}

type ctxKey int

const (
	commandIDKey ctxKey = iota
	correlationIDKey
	causationIDKey
)

// WithCommandID returns a context that carries the command ID id. A command
// implementing Identified with a non-nil ID overrides it.
func WithCommandID(ctx context.Context, id uuid.UUID) context.Context {
	return context.WithValue(ctx, commandIDKey, id)
}

// CommandIDFrom returns the command ID the context carries. Inside a handler
// it is the dispatched command's ID, when it has one.
func CommandIDFrom(ctx context.Context) (uuid.UUID, bool) {
	id, ok := ctx.Value(commandIDKey).(uuid.UUID)
	return id, ok && id != uuid.Nil
}

// CommandIDOf returns cmd's own ID (see Identified) or else the one ctx
// carries.
func CommandIDOf(ctx context.Context, cmd any) (uuid.UUID, bool) {
	if id, ok := idOf(cmd); ok {
		return id, true
	}
	return CommandIDFrom(ctx)
}

func idOf(cmd any) (uuid.UUID, bool) {
	if c, ok := cmd.(Identified); ok {
		if id := c.CommandID(); id != uuid.Nil {
			return id, true
		}
	}
	return uuid.Nil, false
}

// WithCorrelationID returns a context that carries the correlation ID: the
// ID shared by everything one request causes.
func WithCorrelationID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, correlationIDKey, id)
}

// CorrelationIDFrom returns the correlation ID the context carries, or "".
func CorrelationIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(correlationIDKey).(string)
	return id
}

// WithCausationID returns a context that carries the causation ID: the ID of
// the message (command or event) that caused the command.
func WithCausationID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, causationIDKey, id)
}

// CausationIDFrom returns the causation ID the context carries, or "".
func CausationIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(causationIDKey).(string)
	return id
}

// MetadataFrom returns the correlation and causation IDs the context carries
// as event metadata (nil when it carries neither). It fits the aggregate
// repository's metadata hook: aggregate.WithMetadataFrom(commandbus.MetadataFrom).
func MetadataFrom(ctx context.Context) eventstore.Metadata {
	var md eventstore.Metadata
	set := func(k, v string) {
		if v == "" {
			return
		}
		if md == nil {
			md = make(eventstore.Metadata, 2)
		}
		md[k] = v
	}
	set(eventstore.MetaCorrelationID, CorrelationIDFrom(ctx))
	set(eventstore.MetaCausationID, CausationIDFrom(ctx))
	return md
}
