package eventstore

import (
	"cmp"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Position is a place in the store's global feed. It is totally ordered and
// travels as a string (a consistency token) through String and ParsePosition.
//
// A Position is the pair (Tx, Seq): the writing transaction's ID and a
// store-wide sequence number. The zero Position is before every event.
type Position struct {
	Tx  uint64
	Seq uint64
}

// Compare returns -1, 0 or +1 as p is before, equal to or after q.
func (p Position) Compare(q Position) int {
	if c := cmp.Compare(p.Tx, q.Tx); c != 0 {
		return c
	}
	return cmp.Compare(p.Seq, q.Seq)
}

// Before reports whether p is strictly before q.
func (p Position) Before(q Position) bool { return p.Compare(q) < 0 }

// After reports whether p is strictly after q.
func (p Position) After(q Position) bool { return p.Compare(q) > 0 }

// EventsBetween estimates how many records of the feed lie after from up
// to to, from the positions' sequence numbers (a lag: how far a
// checkpoint trails the head). It is 0 when to is not after from, and at
// least 1 when it is.
func EventsBetween(from, to Position) int64 {
	switch {
	case !to.After(from):
		return 0
	case to.Seq > from.Seq:
		return int64(min(to.Seq-from.Seq, math.MaxInt64))
	default:
		return 1
	}
}

// IsZero reports whether p is the start of the feed.
func (p Position) IsZero() bool { return p == Position{} }

// String formats p as "<tx>-<seq>"; ParsePosition reverses it.
func (p Position) String() string {
	return strconv.FormatUint(p.Tx, 10) + "-" + strconv.FormatUint(p.Seq, 10)
}

// MarshalText implements encoding.TextMarshaler.
func (p Position) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *Position) UnmarshalText(b []byte) error {
	q, err := ParsePosition(string(b))
	if err != nil {
		return err
	}
	*p = q
	return nil
}

// ParsePosition parses the form String produces. The empty string is the
// zero Position.
func ParsePosition(s string) (Position, error) {
	if s == "" {
		return Position{}, nil
	}
	txs, seqs, ok := strings.Cut(s, "-")
	if !ok {
		return Position{}, fmt.Errorf("%w: position %q: want <tx>-<seq>", ErrInvalidArgument, s)
	}
	tx, err := strconv.ParseUint(txs, 10, 64)
	if err != nil {
		return Position{}, fmt.Errorf("%w: position %q: %w", ErrInvalidArgument, s, err)
	}
	seq, err := strconv.ParseUint(seqs, 10, 64)
	if err != nil {
		return Position{}, fmt.Errorf("%w: position %q: %w", ErrInvalidArgument, s, err)
	}
	return Position{Tx: tx, Seq: seq}, nil
}
