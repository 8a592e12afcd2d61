package natsevent

import (
	"errors"
	"fmt"
	"strings"

	"github.com/eskit/eskit/eventstore"
)

// DefaultPrefix is the subject prefix (and, upper-cased, the stream name)
// used when none is configured.
const DefaultPrefix = "eskit"

// StreamName returns the name of the JetStream stream that holds the events
// published under prefix: the prefix, upper-cased ("bank" → "BANK"). It is
// the name outbox.EnsureStream gives a StreamConfig without one, so a
// deployment states its prefix once and derives the stream from it:
//
//	outbox.EnsureStream(ctx, js, outbox.StreamConfig{Prefix: "bank"})        // creates BANK
//	projection.WithJetStream(js, natsevent.StreamName("bank"))               // consumes BANK
func StreamName(prefix string) string { return strings.ToUpper(prefix) }

// PrefixFilter returns the subject filter that matches every event
// published under prefix: <prefix>.>. The relay's stream captures it.
func PrefixFilter(prefix string) string { return prefix + ".>" }

// NoCategory is the stream-type token of stream IDs that contain no "-".
const NoCategory = "_"

// escapeChar starts an escape: "~" followed by two lower-case hex digits
// stands for one byte. emptyToken stands for the empty string.
const (
	escapeChar = '~'
	emptyToken = "~_"
)

// ErrInvalidSubject reports a subject (or prefix, or filter) that does not
// follow the eskit subject scheme.
var ErrInvalidSubject = errors.New("natsevent: invalid subject")

// ErrInvalidPartition reports partition numbers out of range (see
// PartitionFilters).
var ErrInvalidPartition = errors.New("natsevent: invalid partition")

// SubjectParts are the decoded tokens of an event subject.
type SubjectParts struct {
	// Prefix is the subject prefix (the first token).
	Prefix string
	// Bucket is the stream's bucket, eventstore.StreamBucket(StreamID).
	Bucket int
	// Category is the stream type: the stream ID before its first "-", or
	// NoCategory.
	Category string
	// StreamID is the stream the event belongs to.
	StreamID string
	// EventType is the event's type name.
	EventType string
}

// subjectTokens is the number of tokens of an event subject.
const subjectTokens = 5

// Two lower-case hex digits hold every bucket.
const _ = uint8(eventstore.StreamBuckets - 1)

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
//
//	<prefix>.<bucket>.<stream type>.<escaped stream ID>.<escaped event type>
//
// where <bucket> is eventstore.StreamBucket(streamID) as two lower-case hex
// digits ("00" to "ff"). The prefix must satisfy ValidatePrefix; stream
// type, stream ID and event type are escaped (see EscapeToken), so the
// subject always has exactly five tokens and never contains a wildcard,
// whatever the stream ID and type name hold. The bucket lets a partitioned
// consumer select whole buckets (see BucketFilter and PartitionFilters).
func Subject(prefix, streamID, eventType string) string {
	var b strings.Builder
	b.Grow(len(prefix) + len(streamID) + len(eventType) + 20)
	b.WriteString(prefix)
	b.WriteByte('.')
	appendBucket(&b, eventstore.StreamBucket(streamID))
	b.WriteByte('.')
	appendEscaped(&b, Category(streamID))
	b.WriteByte('.')
	appendEscaped(&b, streamID)
	b.WriteByte('.')
	appendEscaped(&b, eventType)
	return b.String()
}

// ParseSubject reverses Subject. It fails with an error matching
// ErrInvalidSubject when the subject does not have five tokens, the bucket
// token is not two lower-case hex digits or is not the stream ID's bucket,
// a token is not a valid escape, or the stream type does not match the
// stream ID.
func ParseSubject(subject string) (SubjectParts, error) {
	toks := strings.Split(subject, ".")
	if len(toks) != subjectTokens {
		return SubjectParts{}, fmt.Errorf("%w: %q: %d tokens, want %d", ErrInvalidSubject, subject, len(toks), subjectTokens)
	}
	if err := ValidatePrefix(toks[0]); err != nil {
		return SubjectParts{}, err
	}
	var p SubjectParts
	p.Prefix = toks[0]
	var ok bool
	if p.Bucket, ok = parseBucket(toks[1]); !ok {
		return SubjectParts{}, fmt.Errorf("%w: %q: bucket %q is not two lower-case hex digits", ErrInvalidSubject, subject, toks[1])
	}
	var err error
	if p.Category, err = UnescapeToken(toks[2]); err != nil {
		return SubjectParts{}, err
	}
	if p.StreamID, err = UnescapeToken(toks[3]); err != nil {
		return SubjectParts{}, err
	}
	if p.EventType, err = UnescapeToken(toks[4]); err != nil {
		return SubjectParts{}, err
	}
	if c := Category(p.StreamID); c != p.Category {
		return SubjectParts{}, fmt.Errorf("%w: %q: stream type %q does not match stream ID %q", ErrInvalidSubject, subject, p.Category, p.StreamID)
	}
	if b := eventstore.StreamBucket(p.StreamID); b != p.Bucket {
		return SubjectParts{}, fmt.Errorf("%w: %q: bucket %s does not match stream ID %q (bucket %s)", ErrInvalidSubject, subject, toks[1], p.StreamID, BucketToken(b))
	}
	return p, nil
}

// BucketToken returns the subject token of a bucket: two lower-case hex
// digits. bucket must be between 0 and eventstore.StreamBuckets-1; any other
// value gives a token no event subject has.
func BucketToken(bucket int) string {
	if bucket < 0 || bucket >= eventstore.StreamBuckets {
		return fmt.Sprintf("%02x", bucket)
	}
	return string([]byte{hexDigits[bucket>>4], hexDigits[bucket&0x0f]})
}

func appendBucket(b *strings.Builder, bucket int) {
	b.WriteByte(hexDigits[bucket>>4&0x0f])
	b.WriteByte(hexDigits[bucket&0x0f])
}

// SubjectBucket returns the bucket token of an event subject (its second
// token) without decoding the rest, so a consumer can drop another
// partition's message cheaply. ok is false when the subject has no valid
// bucket token; ParseSubject and DecodeMsg check the whole subject.
func SubjectBucket(subject string) (bucket int, ok bool) {
	_, rest, found := strings.Cut(subject, ".")
	if !found {
		return 0, false
	}
	tok, _, _ := strings.Cut(rest, ".")
	return parseBucket(tok)
}

// parseBucket parses a bucket token: exactly two lower-case hex digits.
func parseBucket(tok string) (int, bool) {
	if len(tok) != 2 {
		return 0, false
	}
	hi, ok1 := unhex(tok[0])
	lo, ok2 := unhex(tok[1])
	if !ok1 || !ok2 {
		return 0, false
	}
	return int(hi)<<4 | int(lo), true
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
// stream: <prefix>.<bucket>.<stream type>.<stream ID>.*.
func StreamFilter(prefix, streamID string) string {
	return prefix + "." + BucketToken(eventstore.StreamBucket(streamID)) + "." + EscapeToken(Category(streamID)) + "." + EscapeToken(streamID) + ".*"
}

// CategoryFilter returns the subject filter that matches every event of the
// streams of one stream type: <prefix>.*.<stream type>.>.
func CategoryFilter(prefix, category string) string {
	return prefix + ".*." + EscapeToken(category) + ".>"
}

// EventTypeFilter returns the subject filter that matches every event of one
// type, in any stream: <prefix>.*.*.*.<event type>.
func EventTypeFilter(prefix, eventType string) string {
	return prefix + ".*.*.*." + EscapeToken(eventType)
}

// BucketFilter returns the subject filter that matches every event of the
// streams of one bucket: <prefix>.<bucket>.>. A bucket outside 0 to
// eventstore.StreamBuckets-1 gives a filter that matches no event.
func BucketFilter(prefix string, bucket int) string {
	return prefix + "." + BucketToken(bucket) + ".>"
}

// PartitionBuckets returns, in ascending order, the buckets of one partition
// when streams are shared among partitions partitions: every bucket b with
// eventstore.BucketPartition(b, partitions) == partition. It fails with an
// error matching ErrInvalidPartition unless 1 ≤ partitions ≤
// eventstore.StreamBuckets and 0 ≤ partition < partitions.
func PartitionBuckets(partition, partitions int) ([]int, error) {
	if partitions < 1 || partitions > eventstore.StreamBuckets {
		return nil, fmt.Errorf("%w: %d partitions, want 1 to %d", ErrInvalidPartition, partitions, eventstore.StreamBuckets)
	}
	if partition < 0 || partition >= partitions {
		return nil, fmt.Errorf("%w: partition %d of %d, want 0 to %d", ErrInvalidPartition, partition, partitions, partitions-1)
	}
	out := make([]int, 0, eventstore.StreamBuckets/partitions+1)
	for b := range eventstore.StreamBuckets {
		if eventstore.BucketPartition(b, partitions) == partition {
			out = append(out, b)
		}
	}
	return out, nil
}

// PartitionFilters returns the subject filters that together match exactly
// the events of one partition among partitions partitions (the events whose
// stream has eventstore.StreamPartition(streamID, partitions) == partition):
// ["<prefix>.>"] for a single partition, otherwise one BucketFilter per
// bucket of the partition (see PartitionBuckets), in ascending bucket order.
// The filters never overlap, so they can be a consumer's FilterSubjects
// (NATS server 2.10 or newer, FeatureMultiFilter). It fails with an error
// matching ErrInvalidSubject for a bad prefix and ErrInvalidPartition for
// bad partition numbers.
func PartitionFilters(prefix string, partition, partitions int) ([]string, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return nil, err
	}
	buckets, err := PartitionBuckets(partition, partitions)
	if err != nil {
		return nil, err
	}
	if partitions == 1 {
		return []string{prefix + ".>"}, nil
	}
	out := make([]string, len(buckets))
	for i, b := range buckets {
		out[i] = BucketFilter(prefix, b)
	}
	return out, nil
}

// ValidateFilter checks a subject filter the way NATS does: non-empty
// tokens without whitespace, "*" and ">" only as whole tokens, ">" only as
// the last one. It fails with an error matching ErrInvalidSubject.
func ValidateFilter(filter string) error {
	if filter == "" {
		return fmt.Errorf("%w: empty filter", ErrInvalidSubject)
	}
	toks := strings.Split(filter, ".")
	for i, tok := range toks {
		switch {
		case tok == "":
			return fmt.Errorf("%w: filter %q: empty token", ErrInvalidSubject, filter)
		case tok == ">" && i != len(toks)-1:
			return fmt.Errorf("%w: filter %q: \">\" must be the last token", ErrInvalidSubject, filter)
		case strings.ContainsAny(tok, " \t\r\n\f"):
			return fmt.Errorf("%w: filter %q: whitespace", ErrInvalidSubject, filter)
		}
	}
	return nil
}

// NarrowFilter restricts a subject filter to one bucket: it returns a
// filter that matches exactly the event subjects (see Subject) that match
// filter and carry the given bucket, and true; or false when no event
// subject of that bucket can match filter: filter is invalid (see
// ValidateFilter), cannot match five tokens, names another bucket, or names
// a stream ID (fourth token) of another bucket or of another stream type.
//
// The filters of StreamFilter, CategoryFilter, EventTypeFilter, BucketFilter
// and "<prefix>.>" narrow as expected: a "*" bucket token becomes the
// bucket, "<prefix>.>" becomes BucketFilter(prefix, bucket), and a
// StreamFilter stays as it is for its own bucket and reports false for any
// other. A partitioned consumer intersects a user's filter with its
// partition by narrowing it to each of the partition's buckets.
func NarrowFilter(filter string, bucket int) (string, bool) {
	if bucket < 0 || bucket >= eventstore.StreamBuckets || ValidateFilter(filter) != nil {
		return "", false
	}
	bt := BucketToken(bucket)
	toks := strings.Split(filter, ".")
	if toks[len(toks)-1] == ">" {
		if len(toks) > subjectTokens {
			return "", false
		}
	} else if len(toks) != subjectTokens {
		return "", false
	}
	if len(toks) == 1 { // ">"
		return "*." + bt + ".>", true
	}
	if toks[0] != "*" && ValidatePrefix(toks[0]) != nil {
		return "", false
	}
	switch toks[1] {
	case ">":
		toks = append(toks[:1], bt, ">")
	case "*":
		toks[1] = bt
	case bt:
	default:
		return "", false
	}
	// Literal tokens must be what Subject can produce for this bucket.
	var cat string
	hasCat := false
	if len(toks) > 2 && !wildcard(toks[2]) {
		c, err := UnescapeToken(toks[2])
		if err != nil {
			return "", false
		}
		cat, hasCat = c, true
	}
	if len(toks) > 3 && !wildcard(toks[3]) {
		id, err := UnescapeToken(toks[3])
		if err != nil || eventstore.StreamBucket(id) != bucket || hasCat && Category(id) != cat {
			return "", false
		}
	}
	if len(toks) > 4 && !wildcard(toks[4]) {
		if _, err := UnescapeToken(toks[4]); err != nil {
			return "", false
		}
	}
	return strings.Join(toks, "."), true
}

// wildcard reports whether a filter token is a wildcard.
func wildcard(tok string) bool { return tok == "*" || tok == ">" }

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

// FilterSubset reports whether every subject that matches filter a also
// matches filter b. Both must be valid filters.
func FilterSubset(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; ; i++ {
		switch {
		case i == len(bt):
			return i == len(at)
		case bt[i] == ">":
			return i < len(at)
		case i == len(at), at[i] == ">":
			return false
		case bt[i] != "*" && at[i] != bt[i]:
			return false
		}
	}
}

// FiltersCollide reports whether some subject matches both filters. Both
// must be valid filters.
func FiltersCollide(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; ; i++ {
		switch {
		case i == len(at) || i == len(bt):
			return len(at) == len(bt)
		case at[i] == ">" || bt[i] == ">":
			return true
		case at[i] != "*" && bt[i] != "*" && at[i] != bt[i]:
			return false
		}
	}
}
