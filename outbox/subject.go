package outbox

import (
	"errors"
	"fmt"
	"strings"
)

// DefaultPrefix is the subject prefix (and, upper-cased, the stream name)
// used when none is configured.
const DefaultPrefix = "eskit"

// NoCategory is the stream-type token of stream IDs that contain no "-".
const NoCategory = "_"

// escapeChar starts an escape: "~" followed by two lower-case hex digits
// stands for one byte. emptyToken stands for the empty string.
const (
	escapeChar = '~'
	emptyToken = "~_"
)

// ErrInvalidSubject reports a subject (or prefix) that does not follow the
// eskit subject scheme.
var ErrInvalidSubject = errors.New("outbox: invalid subject")

// SubjectParts are the decoded tokens of an event subject.
type SubjectParts struct {
	// Prefix is the subject prefix (the first token).
	Prefix string
	// Category is the stream type: the stream ID before its first "-", or
	// NoCategory.
	Category string
	// StreamID is the stream the event belongs to.
	StreamID string
	// EventType is the event's type name.
	EventType string
}

// Category returns the stream type of a stream ID: the part before its first
// "-" (for example "account" for "account-42"), or NoCategory when the ID
// contains no "-".
func Category(streamID string) string {
	cat, _, ok := strings.Cut(streamID, "-")
	if !ok {
		return NoCategory
	}
	return cat
}

// Subject returns the subject an event is published on:
// <prefix>.<stream type>.<escaped stream ID>.<escaped event type>. The prefix
// must satisfy ValidatePrefix; stream type, stream ID and event type are
// escaped (see EscapeToken), so the subject always has exactly four tokens
// and never contains a wildcard, whatever the stream ID and type name hold.
func Subject(prefix, streamID, eventType string) string {
	var b strings.Builder
	b.Grow(len(prefix) + len(streamID) + len(eventType) + 16)
	b.WriteString(prefix)
	b.WriteByte('.')
	appendEscaped(&b, Category(streamID))
	b.WriteByte('.')
	appendEscaped(&b, streamID)
	b.WriteByte('.')
	appendEscaped(&b, eventType)
	return b.String()
}

// ParseSubject reverses Subject. It fails with an error matching
// ErrInvalidSubject when the subject does not have four tokens, a token is
// not a valid escape, or the stream type does not match the stream ID.
func ParseSubject(subject string) (SubjectParts, error) {
	toks := strings.Split(subject, ".")
	if len(toks) != 4 {
		return SubjectParts{}, fmt.Errorf("%w: %q: %d tokens, want 4", ErrInvalidSubject, subject, len(toks))
	}
	if err := ValidatePrefix(toks[0]); err != nil {
		return SubjectParts{}, err
	}
	var p SubjectParts
	p.Prefix = toks[0]
	var err error
	if p.Category, err = UnescapeToken(toks[1]); err != nil {
		return SubjectParts{}, err
	}
	if p.StreamID, err = UnescapeToken(toks[2]); err != nil {
		return SubjectParts{}, err
	}
	if p.EventType, err = UnescapeToken(toks[3]); err != nil {
		return SubjectParts{}, err
	}
	if c := Category(p.StreamID); c != p.Category {
		return SubjectParts{}, fmt.Errorf("%w: %q: stream type %q does not match stream ID %q", ErrInvalidSubject, subject, p.Category, p.StreamID)
	}
	return p, nil
}

// ValidatePrefix checks a subject prefix: one non-empty token of printable
// ASCII without ".", "*", ">" or "~".
func ValidatePrefix(prefix string) error {
	if prefix == "" {
		return fmt.Errorf("%w: empty prefix", ErrInvalidSubject)
	}
	for i := 0; i < len(prefix); i++ {
		if !plain(prefix[i]) {
			return fmt.Errorf("%w: prefix %q: byte %q not allowed", ErrInvalidSubject, prefix, prefix[i])
		}
	}
	return nil
}

// StreamFilter returns the subject filter that matches every event of one
// stream.
func StreamFilter(prefix, streamID string) string {
	return prefix + "." + EscapeToken(Category(streamID)) + "." + EscapeToken(streamID) + ".*"
}

// CategoryFilter returns the subject filter that matches every event of the
// streams of one stream type.
func CategoryFilter(prefix, category string) string {
	return prefix + "." + EscapeToken(category) + ".>"
}

// EventTypeFilter returns the subject filter that matches every event of one
// type, in any stream.
func EventTypeFilter(prefix, eventType string) string {
	return prefix + ".*.*." + EscapeToken(eventType)
}

// plain reports whether b may appear unescaped in a token: printable ASCII
// other than the separator, the wildcards and the escape character.
func plain(b byte) bool {
	return b > ' ' && b < 0x7f && b != '.' && b != '*' && b != '>' && b != escapeChar
}

// EscapeToken turns s into one subject token that contains no ".", "*",
// ">", "~", whitespace, control or non-ASCII bytes: each such byte becomes
// "~" followed by two hex digits, and the empty string becomes "~_".
// UnescapeToken reverses it.
func EscapeToken(s string) string {
	var b strings.Builder
	appendEscaped(&b, s)
	return b.String()
}

const hexDigits = "0123456789abcdef"

func appendEscaped(b *strings.Builder, s string) {
	if s == "" {
		b.WriteString(emptyToken)
		return
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if plain(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte(escapeChar)
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&0x0f])
	}
}

// UnescapeToken reverses EscapeToken. It fails with an error matching
// ErrInvalidSubject on anything EscapeToken cannot produce.
func UnescapeToken(tok string) (string, error) {
	if tok == emptyToken {
		return "", nil
	}
	if tok == "" {
		return "", fmt.Errorf("%w: empty token", ErrInvalidSubject)
	}
	out := make([]byte, 0, len(tok))
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if c != escapeChar {
			if !plain(c) {
				return "", fmt.Errorf("%w: token %q: unescaped byte %q", ErrInvalidSubject, tok, c)
			}
			out = append(out, c)
			continue
		}
		if i+2 >= len(tok) {
			return "", fmt.Errorf("%w: token %q: truncated escape", ErrInvalidSubject, tok)
		}
		hi, ok1 := unhex(tok[i+1])
		lo, ok2 := unhex(tok[i+2])
		if !ok1 || !ok2 {
			return "", fmt.Errorf("%w: token %q: bad escape", ErrInvalidSubject, tok)
		}
		v := hi<<4 | lo
		if plain(v) {
			return "", fmt.Errorf("%w: token %q: needless escape of %q", ErrInvalidSubject, tok, v)
		}
		out = append(out, v)
		i += 2
	}
	return string(out), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
