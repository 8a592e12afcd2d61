package eventstore

import "strconv"

// ExpectedVersion is the optimistic-concurrency condition of an append: the
// version the stream must have before the append.
//
// Versions are 1-based: a stream with n events has version n, and a stream
// that does not exist has version 0.
type ExpectedVersion int64

const (
	// Any appends whatever the stream's version.
	Any ExpectedVersion = -1
	// StreamExists requires the stream to have at least one event.
	StreamExists ExpectedVersion = -2
	// NoStream requires the stream not to exist (version 0).
	NoStream ExpectedVersion = 0
)

// Exact requires the stream to be at version n (n = 0 is NoStream).
func Exact(n int64) ExpectedVersion { return ExpectedVersion(n) }

// Valid reports whether e is one of the defined conditions.
func (e ExpectedVersion) Valid() bool { return e >= StreamExists }

// Check reports whether a stream at version current satisfies e.
func (e ExpectedVersion) Check(current int64) bool {
	switch {
	case e == Any:
		return true
	case e == StreamExists:
		return current > 0
	default:
		return int64(e) == current
	}
}

func (e ExpectedVersion) String() string {
	switch e {
	case Any:
		return "any"
	case StreamExists:
		return "stream-exists"
	case NoStream:
		return "no-stream"
	}
	if e < 0 {
		return "invalid(" + strconv.FormatInt(int64(e), 10) + ")"
	}
	return strconv.FormatInt(int64(e), 10)
}
