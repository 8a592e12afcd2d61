package eventstore

import (
	"time"

	"github.com/google/uuid"
)

// Well-known metadata keys.
const (
	// MetaCorrelationID ties together every event caused by one request.
	MetaCorrelationID = "correlation_id"
	// MetaCausationID is the ID of the command or event that caused this one.
	MetaCausationID = "causation_id"
	// MetaSchemaVersion is the payload version of the event type, written by
	// the Registry and used to pick upcasters on read.
	MetaSchemaVersion = "schema_version"
	// MetaContentType is the codec's content type, written by the Registry.
	MetaContentType = "content_type"
)

// Metadata is free-form string metadata stored with an event.
type Metadata map[string]string

// Get returns the value of key, or "" when m is nil or lacks it.
func (m Metadata) Get(key string) string {
	if m == nil {
		return ""
	}
	return m[key]
}

// Clone returns a copy of m (nil stays nil).
func (m Metadata) Clone() Metadata {
	if m == nil {
		return nil
	}
	c := make(Metadata, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// Event is what a caller appends: an ID (unique in the store), a type name,
// an encoded payload and metadata.
type Event struct {
	ID       uuid.UUID
	Type     string
	Data     []byte
	Metadata Metadata
}

// NewEventID returns a new time-ordered (v7) event ID.
func NewEventID() uuid.UUID {
	id, err := uuid.NewV7()
	if err != nil {
		// NewV7 fails only when the system's random source fails.
		return uuid.New()
	}
	return id
}

// Record is a stored event: the event plus where and when it was stored.
type Record struct {
	Event
	// StreamID is the stream the event belongs to.
	StreamID string
	// Version is the event's 1-based position within its stream.
	Version int64
	// Position is the event's place in the global, commit-ordered feed.
	Position Position
	// RecordedAt is when the store wrote the event.
	RecordedAt time.Time
}
