package eventstore

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Default limits applied by stores to appends.
const (
	// DefaultMaxStreamIDLength is the longest stream ID in bytes.
	DefaultMaxStreamIDLength = 256
	// DefaultMaxEventTypeLength is the longest event type name in bytes.
	DefaultMaxEventTypeLength = 256
	// DefaultMaxEventSize is the largest payload plus metadata of one event.
	// It leaves room for headers within NATS's default 1 MiB max payload.
	DefaultMaxEventSize = 1<<20 - 64<<10
	// DefaultMaxAppendEvents is the most events one append may carry.
	DefaultMaxAppendEvents = 100_000
)

// Limits bounds what an append may carry. Zero fields take the defaults.
type Limits struct {
	MaxStreamIDLength  int
	MaxEventTypeLength int
	MaxEventSize       int
	MaxAppendEvents    int
}

func (l Limits) withDefaults() Limits {
	if l.MaxStreamIDLength <= 0 {
		l.MaxStreamIDLength = DefaultMaxStreamIDLength
	}
	if l.MaxEventTypeLength <= 0 {
		l.MaxEventTypeLength = DefaultMaxEventTypeLength
	}
	if l.MaxEventSize <= 0 {
		l.MaxEventSize = DefaultMaxEventSize
	}
	if l.MaxAppendEvents <= 0 {
		l.MaxAppendEvents = DefaultMaxAppendEvents
	}
	return l
}

// ValidateStreamID checks a stream ID: not empty, valid UTF-8, no control
// characters, at most the limit's length. Dots, wildcards and spaces are
// allowed; the outbox escapes them.
func (l Limits) ValidateStreamID(id string) error {
	l = l.withDefaults()
	switch {
	case id == "":
		return &InvalidArgumentError{Field: "stream ID", Reason: "empty"}
	case len(id) > l.MaxStreamIDLength:
		return &InvalidArgumentError{Field: "stream ID", Reason: fmt.Sprintf("%d bytes, limit %d", len(id), l.MaxStreamIDLength)}
	case !utf8.ValidString(id):
		return &InvalidArgumentError{Field: "stream ID", Reason: "not valid UTF-8"}
	}
	for _, r := range id {
		if unicode.IsControl(r) {
			return &InvalidArgumentError{Field: "stream ID", Reason: fmt.Sprintf("control character %U", r)}
		}
	}
	return nil
}

// PrepareAppends validates appends and returns a copy in which every event
// has an ID (zero IDs get a new v7 ID). The caller's slices are not changed.
func (l Limits) PrepareAppends(appends []StreamAppend) ([]StreamAppend, error) {
	l = l.withDefaults()
	if len(appends) == 0 {
		return nil, &InvalidArgumentError{Field: "appends", Reason: "nothing to append"}
	}
	out := make([]StreamAppend, len(appends))
	streams := make(map[string]struct{}, len(appends))
	ids := make(map[uuid.UUID]struct{})
	total := 0
	for i, a := range appends {
		if err := l.ValidateStreamID(a.StreamID); err != nil {
			return nil, err
		}
		if _, dup := streams[a.StreamID]; dup {
			return nil, &InvalidArgumentError{Field: "stream ID", Reason: fmt.Sprintf("stream %q appears twice in one append", a.StreamID)}
		}
		streams[a.StreamID] = struct{}{}
		if !a.Expected.Valid() {
			return nil, &InvalidArgumentError{Field: "expected version", Reason: a.Expected.String()}
		}
		if len(a.Events) == 0 {
			return nil, &InvalidArgumentError{Field: "events", Reason: fmt.Sprintf("no events for stream %q", a.StreamID)}
		}
		total += len(a.Events)
		if total > l.MaxAppendEvents {
			return nil, &InvalidArgumentError{Field: "events", Reason: fmt.Sprintf("more than %d events in one append", l.MaxAppendEvents)}
		}
		evs := make([]Event, len(a.Events))
		for j, e := range a.Events {
			if err := l.validateEvent(j, e); err != nil {
				return nil, err
			}
			if e.ID == uuid.Nil {
				e.ID = NewEventID()
			}
			if _, dup := ids[e.ID]; dup {
				return nil, &InvalidArgumentError{Field: fmt.Sprintf("events[%d].ID", j), Reason: fmt.Sprintf("event ID %s appears twice in one append", e.ID)}
			}
			ids[e.ID] = struct{}{}
			evs[j] = e
		}
		out[i] = StreamAppend{StreamID: a.StreamID, Expected: a.Expected, Events: evs}
	}
	return out, nil
}

func (l Limits) validateEvent(j int, e Event) error {
	field := func(name string) string { return fmt.Sprintf("events[%d].%s", j, name) }
	switch {
	case e.Type == "":
		return &InvalidArgumentError{Field: field("Type"), Reason: "empty"}
	case len(e.Type) > l.MaxEventTypeLength:
		return &InvalidArgumentError{Field: field("Type"), Reason: fmt.Sprintf("%d bytes, limit %d", len(e.Type), l.MaxEventTypeLength)}
	case !utf8.ValidString(e.Type):
		return &InvalidArgumentError{Field: field("Type"), Reason: "not valid UTF-8"}
	case len(e.Data) == 0:
		return &InvalidArgumentError{Field: field("Data"), Reason: "empty payload"}
	}
	if i := strings.IndexFunc(e.Type, unicode.IsControl); i >= 0 {
		return &InvalidArgumentError{Field: field("Type"), Reason: fmt.Sprintf("control character at byte %d", i)}
	}
	size := len(e.Data)
	for k, v := range e.Metadata {
		size += len(k) + len(v)
		if err := validMetadataText(k); err != "" {
			return &InvalidArgumentError{Field: field("Metadata"), Reason: "key " + err}
		}
		if err := validMetadataText(v); err != "" {
			return &InvalidArgumentError{Field: field("Metadata"), Reason: fmt.Sprintf("value of %q %s", k, err)}
		}
	}
	if size > l.MaxEventSize {
		return &InvalidArgumentError{Field: field("Data"), Reason: fmt.Sprintf("event is %d bytes, limit %d", size, l.MaxEventSize)}
	}
	return nil
}

// validMetadataText reports why a metadata key or value cannot be stored
// as text (stores keep metadata in text or JSON columns), or "".
func validMetadataText(s string) string {
	switch {
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	case strings.IndexByte(s, 0) >= 0:
		return "contains a NUL character"
	}
	return ""
}

// ValidateEventType checks an event type name as appends do with the
// default limits: not empty, at most DefaultMaxEventTypeLength bytes of
// valid UTF-8 without control characters. Registry.Register applies it,
// so a type that every append would refuse cannot be registered.
func ValidateEventType(name string) error {
	const field = "event type name"
	switch {
	case name == "":
		return &InvalidArgumentError{Field: field, Reason: "empty"}
	case len(name) > DefaultMaxEventTypeLength:
		return &InvalidArgumentError{Field: field, Reason: fmt.Sprintf("%d bytes, limit %d", len(name), DefaultMaxEventTypeLength)}
	case !utf8.ValidString(name):
		return &InvalidArgumentError{Field: field, Reason: "not valid UTF-8"}
	}
	if i := strings.IndexFunc(name, unicode.IsControl); i >= 0 {
		return &InvalidArgumentError{Field: field, Reason: fmt.Sprintf("control character at byte %d", i)}
	}
	return nil
}
