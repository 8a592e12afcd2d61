package outbox

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/telemetry"
)

// Message headers the relay sets on every event.
const (
	// HeaderMsgID is JetStream's de-duplication header; it carries the
	// event ID.
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderStreamID carries the event's stream ID, unescaped.
	HeaderStreamID = "Eskit-Stream-Id"
	// HeaderVersion carries the event's version in its stream (decimal).
	HeaderVersion = "Eskit-Version"
	// HeaderPosition carries the event's feed Position (Position.String).
	HeaderPosition = "Eskit-Position"
	// HeaderEventType carries the event's type name, unescaped.
	HeaderEventType = "Eskit-Event-Type"
	// HeaderRecordedAt carries when the store wrote the event (RFC 3339).
	HeaderRecordedAt = "Eskit-Recorded-At"
	// HeaderCorrelationID carries the correlation ID metadata, if any.
	HeaderCorrelationID = "Eskit-Correlation-Id"
	// HeaderCausationID carries the causation ID metadata, if any.
	HeaderCausationID = "Eskit-Causation-Id"
	// HeaderContentType carries the payload's content type, if known.
	HeaderContentType = "Content-Type"
	// HeaderSchemaVersion carries the payload's schema version, if known.
	HeaderSchemaVersion = "Eskit-Schema-Version"
	// HeaderMetadata carries the event's other metadata (the entries
	// without a header of their own) as a JSON object, if it has any.
	HeaderMetadata = "Eskit-Metadata"
	// HeaderTTL is JetStream's per-message TTL header (server 2.11+).
	HeaderTTL = "Nats-TTL"
	// HeaderTraceParent carries the W3C trace context (traceparent) of the
	// event's metadata, or of the relay's publish span when the relay
	// traces it (see telemetry.MetaTraceParent).
	HeaderTraceParent = "traceparent"
	// HeaderTraceState carries the W3C tracestate that goes with
	// HeaderTraceParent, if any.
	HeaderTraceState = "tracestate"
)

// dedicatedHeader returns the header that carries a metadata key, for the
// keys that travel in their own headers rather than in HeaderMetadata.
func dedicatedHeader(key string) (string, bool) {
	switch key {
	case eventstore.MetaCorrelationID:
		return HeaderCorrelationID, true
	case eventstore.MetaCausationID:
		return HeaderCausationID, true
	case eventstore.MetaContentType:
		return HeaderContentType, true
	case eventstore.MetaSchemaVersion:
		return HeaderSchemaVersion, true
	case telemetry.MetaTraceParent:
		return HeaderTraceParent, true
	case telemetry.MetaTraceState:
		return HeaderTraceState, true
	}
	return "", false
}

// inHeader reports whether a metadata entry travels in its own header:
// values that are empty or hold control bytes (which header encoding would
// not keep) go in HeaderMetadata instead.
func inHeader(key, value string) bool {
	if _, ok := dedicatedHeader(key); !ok || value == "" {
		return false
	}
	for i := 0; i < len(value); i++ {
		if value[i] < 0x20 || value[i] == 0x7f {
			return false
		}
	}
	return true
}

// NewMsg returns the message the relay publishes for rec under the given
// subject prefix (without TTL).
func NewMsg(prefix string, rec eventstore.Record) *nats.Msg {
	const n = 13
	vals := make([]string, 0, n)
	h := make(nats.Header, n)
	set := func(k, v string) {
		vals = append(vals, v)
		h[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	set(HeaderMsgID, rec.ID.String())
	set(HeaderStreamID, rec.StreamID)
	set(HeaderVersion, strconv.FormatInt(rec.Version, 10))
	set(HeaderPosition, rec.Position.String())
	set(HeaderEventType, rec.Type)
	if !rec.RecordedAt.IsZero() {
		set(HeaderRecordedAt, rec.RecordedAt.UTC().Format(time.RFC3339Nano))
	}
	others := 0
	for k, v := range rec.Metadata {
		if inHeader(k, v) {
			hk, _ := dedicatedHeader(k)
			set(hk, v)
			continue
		}
		others++
	}
	if others > 0 {
		set(HeaderMetadata, string(metadataJSON(rec.Metadata, others)))
	}
	return &nats.Msg{Subject: Subject(prefix, rec.StreamID, rec.Type), Header: h, Data: rec.Data}
}

// metadataJSON encodes the metadata entries without a dedicated header as a
// JSON object with sorted keys.
func metadataJSON(md eventstore.Metadata, n int) []byte {
	keys := make([]string, 0, n)
	for k, v := range md {
		if !inHeader(k, v) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	b := make([]byte, 0, 64)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		b = appendJSONString(b, md[k])
	}
	return append(b, '}')
}

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes U+FFFD
// as encoding/json does.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// DecodeMsg rebuilds the record a relay published from a message's subject,
// headers and payload.
func DecodeMsg(subject string, h nats.Header, data []byte) (eventstore.Record, error) {
	parts, err := ParseSubject(subject)
	if err != nil {
		return eventstore.Record{}, err
	}
	var rec eventstore.Record
	rec.StreamID, rec.Type, rec.Data = parts.StreamID, parts.EventType, data
	if v := h.Get(HeaderStreamID); v != "" && v != rec.StreamID {
		return eventstore.Record{}, fmt.Errorf("outbox: message header %s %q does not match subject %q", HeaderStreamID, v, subject)
	}
	if v := h.Get(HeaderEventType); v != "" && v != rec.Type {
		return eventstore.Record{}, fmt.Errorf("outbox: message header %s %q does not match subject %q", HeaderEventType, v, subject)
	}
	if rec.ID, err = uuid.Parse(h.Get(HeaderMsgID)); err != nil {
		return eventstore.Record{}, fmt.Errorf("outbox: message header %s: %w", HeaderMsgID, err)
	}
	if rec.Version, err = strconv.ParseInt(h.Get(HeaderVersion), 10, 64); err != nil {
		return eventstore.Record{}, fmt.Errorf("outbox: message header %s: %w", HeaderVersion, err)
	}
	if rec.Position, err = eventstore.ParsePosition(h.Get(HeaderPosition)); err != nil {
		return eventstore.Record{}, fmt.Errorf("outbox: message header %s: %w", HeaderPosition, err)
	}
	if v := h.Get(HeaderRecordedAt); v != "" {
		if rec.RecordedAt, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return eventstore.Record{}, fmt.Errorf("outbox: message header %s: %w", HeaderRecordedAt, err)
		}
	}
	if v := h.Get(HeaderMetadata); v != "" {
		var md eventstore.Metadata
		if err := json.Unmarshal([]byte(v), &md); err != nil {
			return eventstore.Record{}, fmt.Errorf("outbox: message header %s: %w", HeaderMetadata, err)
		}
		rec.Metadata = md
	}
	for _, k := range [...]string{eventstore.MetaCorrelationID, eventstore.MetaCausationID, eventstore.MetaContentType, eventstore.MetaSchemaVersion, telemetry.MetaTraceParent, telemetry.MetaTraceState} {
		hk, _ := dedicatedHeader(k)
		if v := h.Get(hk); v != "" {
			if rec.Metadata == nil {
				rec.Metadata = make(eventstore.Metadata, 6)
			}
			rec.Metadata[k] = v
		}
	}
	return rec, nil
}
