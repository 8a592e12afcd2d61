package snapshot

import (
	"context"
	"iter"

	"github.com/eskit/eskit/eventstore"
)

// EventLoader is an optional interface of event stores that keep snapshots
// next to their events (pgstore's Store, with the snapshot store of its own
// schema): it reads a stream's snapshot and the events after it in one
// round trip, where a snapshot store and an event store take two. The
// aggregate repository uses it whenever its event store implements it and
// accepts its snapshot store.
type EventLoader interface {
	// LoadWithSnapshot returns the events of streamID that follow its
	// snapshot in snaps (all its events when snaps is nil, or when the
	// stream has no snapshot that the load can use). It returns an error
	// matching errors.ErrUnsupported, and reads nothing, when snaps is a
	// snapshot store it cannot read together with its events; the caller
	// then loads the snapshot and reads the stream itself.
	//
	// Nothing is read until the sequence is ranged over; it can be ranged
	// over once. Before the first event it calls opts.Use with the
	// stream's snapshot, if it has one (of any schema version) at or below
	// opts.MaxVersion. The events then start after the snapshot's version
	// when the snapshot has opts.SchemaVersion and Use returned true, and
	// at the stream's first event otherwise. As with
	// eventstore.StreamReader.ReadStream, a stream without events yields a
	// single *eventstore.StreamNotFoundError (after Use, when it has a
	// snapshot). The store may hold a connection while the caller handles
	// the events.
	//
	// The records carry what a fold needs: StreamID, Version, Type, Data
	// and Metadata; a store may leave their ID, Position and RecordedAt
	// zero, and let records share payload buffers (a record's Data must
	// not be changed).
	LoadWithSnapshot(ctx context.Context, snaps Store, streamID string, opts LoadOptions) (iter.Seq2[eventstore.Record, error], error)
}

// LoadOptions configure one EventLoader.LoadWithSnapshot.
type LoadOptions struct {
	// SchemaVersion is the schema version of the states the caller can
	// decode: a snapshot of another schema version is handed to Use but
	// never skips events.
	SchemaVersion int
	// MaxVersion, when above 0, ends the load at that version: a snapshot
	// above it is not used and no event above it is read.
	MaxVersion int64
	// Use is called with the stream's snapshot, before the first event,
	// and reports whether the caller uses it (the snapshot's state
	// decodes). Nil uses every snapshot of SchemaVersion.
	Use func(Snapshot) bool
}
