package snapshot

// Point describes a successful append to a stream, for a Policy to decide
// whether to snapshot the resulting state.
type Point struct {
	// StreamID is the stream appended to.
	StreamID string
	// SnapshotVersion is the version of the snapshot the state was loaded
	// from (0 when it was rebuilt from the first event).
	SnapshotVersion int64
	// PrevVersion is the stream's version before the append.
	PrevVersion int64
	// Version is the stream's version after the append.
	Version int64
}

// Policy decides when to take a snapshot.
type Policy interface {
	// ShouldSnapshot reports whether the state after the append described
	// by p should be snapshotted.
	ShouldSnapshot(p Point) bool
}

// PolicyFunc adapts a function to a Policy.
type PolicyFunc func(Point) bool

// ShouldSnapshot implements Policy.
func (f PolicyFunc) ShouldSnapshot(p Point) bool { return f(p) }

// Predicate returns a Policy that snapshots whenever fn returns true.
func Predicate(fn func(Point) bool) Policy { return PolicyFunc(fn) }

// EveryN returns a Policy that snapshots a stream every so many events. It
// counts events, not commands: a command that causes three events counts
// three. It snapshots when an append takes the stream's version across a
// multiple of events (an append of several events that jumps over a
// multiple counts), so a load replays fewer than events events after the
// snapshot. It also snapshots when the state was loaded with at least
// 2×events events after its snapshot, which happens only when earlier
// snapshots were dropped or failed (a snapshot still being saved leaves a
// shorter tail). events below 1 means 1.
func EveryN(events int64) Policy {
	n := max(events, 1)
	return PolicyFunc(func(p Point) bool {
		if p.Version/n > p.PrevVersion/n {
			return true
		}
		return p.PrevVersion-p.SnapshotVersion >= 2*n
	})
}

// Never returns a Policy that never snapshots.
func Never() Policy { return PolicyFunc(func(Point) bool { return false }) }
