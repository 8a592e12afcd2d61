// Package snapshot stores aggregate snapshots: the encoded state of a stream
// at a version, so that loading a long stream costs the events after the
// snapshot rather than the whole stream.
//
// A Store keeps the newest snapshot of each stream. Policies decide when the
// repository takes one (EveryN: every n events, not commands; or a
// predicate), and a StateCodec turns states into bytes (JSON by default).
// A snapshot records the schema version of the state's encoding: readers
// ignore snapshots of another schema version and rebuild the state from
// the events instead. An event store that keeps snapshots next to its
// events (pgstore) implements EventLoader, which reads a snapshot and the
// events after it in one round trip.
package snapshot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Snapshot is the encoded state of a stream after the event at Version.
type Snapshot struct {
	// StreamID is the stream the state was built from.
	StreamID string
	// Version is the version of the last event folded into State.
	Version int64
	// SchemaVersion is the version of State's encoding. A reader whose
	// schema version differs ignores the snapshot.
	SchemaVersion int
	// State is the encoded state.
	State []byte
	// TakenAt is when the snapshot was taken. A zero TakenAt is set by
	// the store on Save.
	TakenAt time.Time
}

// ErrNotFound matches the error of a Load for a stream without a snapshot.
var ErrNotFound = errors.New("snapshot: not found")

// NotFoundError reports that a stream has no snapshot.
type NotFoundError struct {
	StreamID string
}

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("snapshot: no snapshot of stream %q", e.StreamID)
}

// Is makes errors.Is(err, ErrNotFound) true.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// Store keeps the newest snapshot of each stream. Implementations are safe
// for concurrent use.
type Store interface {
	// Load returns the stream's snapshot, or an error matching ErrNotFound.
	Load(ctx context.Context, streamID string) (Snapshot, error)
	// Save stores s unless the stored snapshot of the stream has a higher
	// version (then Save does nothing and returns nil). A save at the same
	// version replaces the stored snapshot.
	Save(ctx context.Context, s Snapshot) error
	// Delete removes the stream's snapshot; deleting a missing snapshot is
	// not an error.
	Delete(ctx context.Context, streamID string) error
}

// StateCodec encodes states into snapshot bytes and back.
type StateCodec interface {
	// Marshal encodes v.
	Marshal(v any) ([]byte, error)
	// Unmarshal decodes data into the value v points to.
	Unmarshal(data []byte, v any) error
}

// JSON is the default StateCodec, on encoding/json. Only exported fields
// of the state survive it.
type JSON struct{}

// Marshal implements StateCodec.
func (JSON) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal implements StateCodec.
func (JSON) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// Validate checks a snapshot before a store saves it (stores call it): a
// stream ID, a version of at least 1, a state.
func Validate(s Snapshot) error {
	switch {
	case s.StreamID == "":
		return errors.New("snapshot: empty stream ID")
	case s.Version < 1:
		return fmt.Errorf("snapshot: stream %q: version %d: must be at least 1", s.StreamID, s.Version)
	case s.State == nil:
		return fmt.Errorf("snapshot: stream %q: nil state", s.StreamID)
	}
	return nil
}
