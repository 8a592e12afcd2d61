package natsevent

import (
	"encoding/base64"
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
//
// No value a user controls travels as a header of its own: NATS servers up
// to 2.9 find their control headers (Nats-Msg-Id, Nats-Expected-Last-Msg-Id,
// ...) by searching the whole header block for their names, and nats.go
// trims spaces from header values. So headers hold only what eskit writes
// from a fixed alphabet — the event ID, version, position and write time —
// and a validated W3C traceparent (lower-case hex and '-'); the stream ID
// and the event type travel in the subject (escaped), and every metadata
// entry in HeaderMetadata, base64-encoded: its alphabet has no '-', ':',
// space or line break, so no value can reach, imitate or disturb a control
// header, and every value round-trips exactly.
const (
	// HeaderMsgID is JetStream's de-duplication header; it carries the
	// event ID.
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderVersion carries the event's version in its stream (decimal).
	HeaderVersion = "Eskit-Version"
	// HeaderPosition carries the event's feed Position (Position.String).
	HeaderPosition = "Eskit-Position"
	// HeaderRecordedAt carries when the store wrote the event (RFC 3339).
	HeaderRecordedAt = "Eskit-Recorded-At"
	// HeaderMetadata carries the event's metadata, if it has any: a JSON
	// object of its entries (sorted keys), base64-encoded (standard
	// alphabet, no padding).
	HeaderMetadata = "Eskit-Metadata"
	// HeaderTTL is JetStream's per-message TTL header (server 2.11+).
	HeaderTTL = "Nats-TTL"
	// HeaderTraceParent carries the W3C trace context (traceparent) of the
	// event's metadata when it is a well-formed one, or of the relay's
	// publish span when the relay traces it (see telemetry.MetaTraceParent).
	// The tracestate stays in the metadata: its free text could imitate a
	// control header.
	HeaderTraceParent = "traceparent"
)

// ValidTraceParent reports whether v is a W3C traceparent of version 00:
// 2, 32, 16 and 2 lower-case hex digits joined by '-'.
func ValidTraceParent(v string) bool {
	if len(v) != 55 || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return false
	}
	for i := 0; i < len(v); i++ {
		if i == 2 || i == 35 || i == 52 {
			continue
		}
		if _, ok := unhex(v[i]); !ok {
			return false
		}
	}
	return true
}

// NewMsg returns the message the relay publishes for rec under the given
// subject prefix (without TTL).
func NewMsg(prefix string, rec eventstore.Record) *nats.Msg {
	const n = 6
	vals := make([]string, 0, n)
	// Room for the headers the relay adds (an expected last message ID,
	// a TTL, a trace header) without the map growing.
	h := make(nats.Header, n+2)
	set := func(k, v string) {
		vals = append(vals, v)
		h[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	set(HeaderMsgID, rec.ID.String())
	set(HeaderVersion, strconv.FormatInt(rec.Version, 10))
	set(HeaderPosition, rec.Position.String())
	if !rec.RecordedAt.IsZero() {
		set(HeaderRecordedAt, rec.RecordedAt.UTC().Format(time.RFC3339Nano))
	}
	if len(rec.Metadata) > 0 {
		set(HeaderMetadata, base64.RawStdEncoding.EncodeToString(metadataJSON(rec.Metadata)))
		if tp := rec.Metadata[telemetry.MetaTraceParent]; ValidTraceParent(tp) {
			set(HeaderTraceParent, tp)
		}
	}
	return &nats.Msg{Subject: Subject(prefix, rec.StreamID, rec.Type), Header: h, Data: rec.Data}
}

// metadataJSON encodes the metadata as a JSON object with sorted keys.
func metadataJSON(md eventstore.Metadata) []byte {
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
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
// as encoding/json does (the store accepts only valid UTF-8 metadata).
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
	if rec.ID, err = uuid.Parse(h.Get(HeaderMsgID)); err != nil {
		return eventstore.Record{}, fmt.Errorf("natsevent: message header %s: %w", HeaderMsgID, err)
	}
	if rec.Version, err = strconv.ParseInt(h.Get(HeaderVersion), 10, 64); err != nil {
		return eventstore.Record{}, fmt.Errorf("natsevent: message header %s: %w", HeaderVersion, err)
	}
	if rec.Position, err = eventstore.ParsePosition(h.Get(HeaderPosition)); err != nil {
		return eventstore.Record{}, fmt.Errorf("natsevent: message header %s: %w", HeaderPosition, err)
	}
	if v := h.Get(HeaderRecordedAt); v != "" {
		if rec.RecordedAt, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return eventstore.Record{}, fmt.Errorf("natsevent: message header %s: %w", HeaderRecordedAt, err)
		}
	}
	if v := h.Get(HeaderMetadata); v != "" {
		raw, err := base64.RawStdEncoding.DecodeString(v)
		if err != nil {
			return eventstore.Record{}, fmt.Errorf("natsevent: message header %s: %w", HeaderMetadata, err)
		}
		var md eventstore.Metadata
		if err := json.Unmarshal(raw, &md); err != nil {
			return eventstore.Record{}, fmt.Errorf("natsevent: message header %s: %w", HeaderMetadata, err)
		}
		rec.Metadata = md
	}
	// The relay's publish span, when it traced the publish, is the parent
	// of what follows.
	if v := h.Get(HeaderTraceParent); ValidTraceParent(v) {
		if rec.Metadata == nil {
			rec.Metadata = make(eventstore.Metadata, 1)
		}
		rec.Metadata[telemetry.MetaTraceParent] = v
	}
	return rec, nil
}
