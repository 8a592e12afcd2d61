package eventstore

import (
	"context"
	"iter"
	"time"

	"github.com/google/uuid"
)

// StreamAppend is the part of an append that targets one stream.
type StreamAppend struct {
	StreamID string
	Expected ExpectedVersion
	Events   []Event
}

// StreamResult is a stream's version after an append.
type StreamResult struct {
	StreamID string
	// Version is the stream's version after the append (the version of its
	// last appended event).
	Version int64
}

// AppendResult describes a successful append.
type AppendResult struct {
	// Streams has one entry per StreamAppend, in the order given.
	Streams []StreamResult
	// Position is the feed position of the last event appended.
	Position Position
	// Duplicate is true when every event of the append was already stored,
	// in the same streams and order, by an earlier append: nothing was
	// written and the result is the earlier append's.
	Duplicate bool
}

// Version returns the new version of the first (usually only) stream.
func (r AppendResult) Version() int64 {
	if len(r.Streams) == 0 {
		return 0
	}
	return r.Streams[0].Version
}

// StreamReader reads individual streams.
type StreamReader interface {
	// ReadStream yields the stream's events in version order, starting at
	// version from (values below 1 mean 1). A stream without events yields
	// a single *StreamNotFoundError; a stream whose last version is below
	// from yields nothing.
	ReadStream(ctx context.Context, streamID string, from int64) iter.Seq2[Record, error]
	// ReadStreamBackward yields the stream's events in reverse version
	// order, starting at version from (values below 1 mean the last event).
	ReadStreamBackward(ctx context.Context, streamID string, from int64) iter.Seq2[Record, error]
	// StreamVersion returns the stream's current version, or a
	// *StreamNotFoundError when the stream has no events.
	StreamVersion(ctx context.Context, streamID string) (int64, error)
	// ReadEvent returns the record of one event ID, or an error matching
	// ErrEventNotFound.
	ReadEvent(ctx context.Context, id uuid.UUID) (Record, error)
}

// FeedReader reads the global feed.
type FeedReader interface {
	// ReadAll returns up to limit records with a Position after the given
	// one, in Position order. It never returns a record while an earlier
	// Position may still appear: a reader that tails the feed from the
	// start sees every committed event exactly once.
	ReadAll(ctx context.Context, after Position, limit int) ([]Record, error)
	// Head returns the Position of the last record ReadAll can return now
	// (the zero Position for an empty store).
	Head(ctx context.Context) (Position, error)
}

// Appender writes events.
type Appender interface {
	// Append appends events to one stream if its version satisfies
	// expected. Events with a zero ID are given a new (v7) ID.
	Append(ctx context.Context, streamID string, expected ExpectedVersion, events ...Event) (AppendResult, error)
	// AppendMulti appends to several streams atomically: one failed
	// condition aborts all of them. A stream may appear only once.
	AppendMulti(ctx context.Context, appends ...StreamAppend) (AppendResult, error)
}

// Store is an event store.
type Store interface {
	Appender
	StreamReader
	FeedReader
	// Subscribe yields every record after the given Position: history
	// first, then live records shortly after they commit, until ctx ends
	// (then it stops without an error) or a read fails (then it yields the
	// error and stops).
	Subscribe(ctx context.Context, after Position) iter.Seq2[Record, error]
}

// FeedLag describes how far the feed's safe point trails the newest write.
type FeedLag struct {
	// Events is the number of committed events not yet visible on the feed.
	Events int64
	// Age is how long the oldest of them has waited.
	Age time.Duration
}
