package projection

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/lease"
)

// part is one partition of a projection in a runner.
type part struct {
	pr  *proj
	idx int
	log *slog.Logger

	// mu serialises everything that writes the partition: batches,
	// parked-record operations, rebuild pages and namespace switches.
	mu   sync.Mutex
	cur  *nsState // serving namespace while the runner holds the lease
	next *nsState // namespace a rebuild builds, or nil
	// rebuildProgress logs the progress of next's build.
	rebuildProgress *progress
	sessCtx         context.Context // the active session's context
	// replayHint is the highest position this runner committed before its
	// state was found changed under it (Redis rolled back): records up to
	// it are re-applied as replays, so their side effects do not fire
	// twice.
	replayHint eventstore.Position

	// keeper keeps the partition's lease; held is the lease of the active
	// session (set before the session starts).
	keeper *lease.Keeper
	held   *lease.Held
	// leaseMu keeps renewals (which touch the lease key) from aborting a
	// commit's WATCH: commits share it, renewals take it alone.
	leaseMu sync.RWMutex

	// session bookkeeping, owned by the scheduler (failed and caughtUp are
	// written by the session, and read once done is closed)
	stop       context.CancelCauseFunc
	done       chan struct{}
	freeFor    time.Time   // when the scheduler first saw the lease free
	handover   atomic.Bool // the session ends after its batch: the partition goes to another runner
	handoverAt time.Time
	failed     bool // the session failed (and its lease was given back)
	caughtUp   bool // the session caught up from the store
	// following: the active session caught up and follows new records
	// (from JetStream, or the feed).
	following atomic.Bool
	restarts  int       // sessions in a row that failed before catching up
	retryAt   time.Time // the scheduler takes the partition again from then on

	vmu     sync.Mutex // guards the view below
	active  bool
	version int64
	ckpt    eventstore.Position
	lastAt  time.Time // RecordedAt of the last applied record
	parked  int
	serving bool          // readers see what the partition applies
	notify  chan struct{} // closed and replaced after every commit

	// metaNow asks the session to read the projection's meta at its next
	// maintenance (a rebuild was marked in this process), and kick (one
	// token) wakes a session waiting for records.
	metaNow atomic.Bool
	kick    chan struct{}
}

// poke makes the partition's session read the projection's meta at once.
func (pt *part) poke() {
	pt.metaNow.Store(true)
	select {
	case pt.kick <- struct{}{}:
	default:
	}
}

// nsState is the applied state of one namespace of one partition.
type nsState struct {
	ns   Namespace
	ckpt checkpoint
	// replay: records are history replayed into the namespace (no side
	// effects) up to replayUntil (all of them when replayUntil is zero).
	replay      bool
	replayUntil eventstore.Position
	// serving is true while the namespace is the active one; it changes
	// only under part.mu.
	serving bool
	// following: a rebuild's namespace that has caught up with the serving
	// one and gets every batch with it; readyAt is the serving namespace's
	// checkpoint then: the new one is ready once verified up to it.
	following bool
	readyAt   eventstore.Position
	blocked   map[string]eventstoreID // stream -> first parked record
	parked    int
	// versions caches the last applied (or parked) version of streams;
	// complete means it holds every stream of the namespace (one built
	// from empty in this session), so a missing stream is at version 0.
	versions map[string]int64
	complete bool
	// lost: the partition of the active namespace is rebuilt in place
	// after losing its data.
	lost bool
	// unswitched: a first build's namespace that readers do not see yet.
	unswitched bool
}

// isReplay reports whether rec is history replayed into st.
func (st *nsState) isReplay(rec eventstore.Record) bool {
	return st.replay && (st.replayUntil.IsZero() || !rec.Position.After(st.replayUntil))
}

// maxCachedStreams bounds nsState.versions; past it the cache is dropped
// and refilled from Redis as batches need it.
const maxCachedStreams = 1 << 20

// activate makes st the serving namespace of the partition's session.
func (pt *part) activate(ctx context.Context, st *nsState) {
	pt.mu.Lock()
	st.serving = true
	pt.cur, pt.next, pt.sessCtx = st, nil, ctx
	pt.mu.Unlock()
	pt.vmu.Lock()
	// Not once the session has ended (its lease lost meanwhile).
	pt.active = ctx.Err() == nil
	pt.vmu.Unlock()
	pt.publish(st)
}

func (pt *part) deactivate() {
	pt.mu.Lock()
	if pt.cur != nil {
		pt.cur.serving = false
	}
	pt.cur, pt.next, pt.sessCtx = nil, nil, nil
	pt.mu.Unlock()
	pt.following.Store(false)
	pt.vmu.Lock()
	pt.active = false
	close(pt.notify)
	pt.notify = make(chan struct{})
	pt.vmu.Unlock()
}

// publish makes st's progress visible to WaitFor and wakes waiters.
func (pt *part) publish(st *nsState) {
	pt.vmu.Lock()
	pt.version, pt.ckpt = st.ns.Version, st.ckpt.pos
	pt.lastAt, pt.parked = st.ckpt.lastAt, st.parked
	pt.serving = !st.unswitched && !st.lost
	close(pt.notify)
	pt.notify = make(chan struct{})
	pt.vmu.Unlock()
}

// wake returns the channel closed at the next commit, and the local
// checkpoint and version when this runner holds the partition.
func (pt *part) wake() (<-chan struct{}, eventstore.Position, int64, bool) {
	pt.vmu.Lock()
	defer pt.vmu.Unlock()
	return pt.notify, pt.ckpt, pt.version, pt.active && pt.serving
}

// activeState returns the serving namespace and session context, or
// ErrNotActive. The caller holds pt.mu.
func (pt *part) activeState() (*nsState, context.Context, error) {
	if pt.cur == nil {
		return nil, nil, fmt.Errorf("%w: %q partition %d", ErrNotActive, pt.pr.name, pt.idx)
	}
	return pt.cur, pt.sessCtx, nil
}

// setParked rebuilds the blocked-stream index from the parked records.
func (st *nsState) setParked(parked []ParkedRecord) {
	st.blocked = make(map[string]eventstoreID)
	st.parked = len(parked)
	for _, p := range parked {
		if _, ok := st.blocked[p.Record.StreamID]; !ok {
			st.blocked[p.Record.StreamID] = p.Record.ID.String()
		}
	}
}

// targets returns the namespaces a batch of the partition writes: the
// serving one, and a rebuild's once it follows. The caller holds pt.mu.
func (pt *part) targets() []*nsState {
	if pt.next != nil && pt.next.following {
		return []*nsState{pt.cur, pt.next}
	}
	return []*nsState{pt.cur}
}

// mine returns the records of recs that belong to the partition.
func (pt *part) mine(recs []eventstore.Record) []eventstore.Record {
	if pt.pr.partitions == 1 {
		return recs
	}
	out := make([]eventstore.Record, 0, len(recs)/pt.pr.partitions+1)
	for _, rec := range recs {
		if eventstore.StreamPartition(rec.StreamID, pt.pr.partitions) == pt.idx {
			out = append(out, rec)
		}
	}
	return out
}

// rememberCommitted keeps the highest position this runner committed, so
// that if Redis turns out to hold less the next session replays those
// records without firing their side effects again.
func (pt *part) rememberCommitted() {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	if pt.cur != nil {
		pt.replayHint = maxPosition(pt.replayHint, pt.cur.ckpt.pos)
	}
}

// sessionEnded records how the partition's last session ended: one that
// failed makes the scheduler wait for the backoff policy's next delay
// before it takes the partition again, growing while sessions keep failing
// before they catch up. The scheduler calls it once done is closed.
func (pt *part) sessionEnded(p backoff.Policy, now time.Time) {
	switch {
	case !pt.failed:
		pt.restarts, pt.retryAt = 0, time.Time{}
		return
	case pt.caughtUp:
		pt.restarts = 0
	}
	pt.restarts++
	pt.retryAt = now.Add(p.Next(pt.restarts))
}
