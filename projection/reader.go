package projection

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/eventstore"
)

// Defaults for waiting.
const (
	// DefaultPollInterval is the longest pause between two reads of a
	// checkpoint by WaitFor, and between two reads of the feed when a
	// runner follows the store without a broker.
	DefaultPollInterval = 50 * time.Millisecond
	// minPollInterval is WaitFor's first pause; pauses double up to the
	// poll interval.
	minPollInterval = 2 * time.Millisecond
)

// Reader gives the query side (and operators) what the runners publish in
// Redis: the active namespace of each projection, checkpoints, status and
// parked records. It needs no lease and can run in any process. A Reader is
// safe for concurrent use.
type Reader struct {
	be     backend
	prefix string
	feed   eventstore.FeedReader
	poll   time.Duration
}

// NewReader returns a Reader of the projections under prefix, the word
// the runners were given (WithPrefix: "bank" and "bank:" name the same
// keys, see KeyPrefix). feed is optional: with it, Status reports the lag
// behind the store's head.
func NewReader(rdb redis.UniversalClient, prefix string, feed eventstore.FeedReader) *Reader {
	prefix = KeyPrefix(prefix)
	return &Reader{be: newRedisBackend(rdb, prefix), prefix: prefix, feed: feed, poll: DefaultPollInterval}
}

// NewReaderOn returns a Reader of the projections of target under prefix
// (see NewReader).
func NewReaderOn(target Target, prefix string, feed eventstore.FeedReader) (*Reader, error) {
	prefix = KeyPrefix(prefix)
	be, err := target.backend(prefix)
	if err != nil {
		return nil, err
	}
	return &Reader{be: be, prefix: prefix, feed: feed, poll: DefaultPollInterval}, nil
}

func (r *Reader) keys(name string) keys { return newKeys(r.prefix, name) }

// Namespace returns the projection's active namespace: the one readers
// should query (partition 0 of it; see Namespace.ForStream and
// Namespace.All). It fails with a *NotReadyError (matching ErrNotReady)
// while the projection has no complete read model: before its first build
// completed, or while a partition that lost its data is rebuilt.
func (r *Reader) Namespace(ctx context.Context, name string) (Namespace, error) {
	k := r.keys(name)
	m, err := r.be.readMeta(ctx, name)
	if err != nil {
		return Namespace{}, err
	}
	if err := m.ready(name); err != nil {
		return Namespace{}, err
	}
	return k.namespace(m.active, 0, m.partitions), nil
}

// Key returns a key of the active namespace of a projection with one
// partition (see Namespace.Key); for a partitioned projection use
// StreamKey or Namespace.
func (r *Reader) Key(ctx context.Context, name string, parts ...string) (string, error) {
	ns, err := r.Namespace(ctx, name)
	if err != nil {
		return "", err
	}
	if ns.Partitions > 1 {
		return "", fmt.Errorf("projection %q has %d partitions: use StreamKey, or Namespace and ForStream/All", name, ns.Partitions)
	}
	return ns.Key(parts...), nil
}

// StreamKey returns a key of the active namespace, in the partition that
// applies streamID's events.
func (r *Reader) StreamKey(ctx context.Context, name, streamID string, parts ...string) (string, error) {
	ns, err := r.Namespace(ctx, name)
	if err != nil {
		return "", err
	}
	return ns.ForStream(streamID).Key(parts...), nil
}

// partitionCheckpoint returns the position one partition of the active
// namespace has applied (partition picks it from the stored partition
// count), and whether the read model may be served: one meta read and one
// checkpoint read per call.
func (r *Reader) partitionCheckpoint(ctx context.Context, name string, partition func(partitions int) int) (eventstore.Position, bool, error) {
	m, err := r.be.readMeta(ctx, name)
	if err != nil || m.ready(name) != nil {
		return eventstore.Position{}, false, err
	}
	c, err := r.be.readCheckpoint(ctx, name, partition(m.partitions), m.active)
	return c.pos, true, err
}

// Checkpoint returns the position every partition of the projection's
// active namespace has applied (the lowest of their checkpoints).
func (r *Reader) Checkpoint(ctx context.Context, name string) (eventstore.Position, error) {
	pos, _, err := r.checkpoint(ctx, name)
	return pos, err
}

// checkpoint is Checkpoint, and whether the read model may be served.
func (r *Reader) checkpoint(ctx context.Context, name string) (eventstore.Position, bool, error) {
	m, err := r.be.readMeta(ctx, name)
	if err != nil || m.ready(name) != nil {
		return eventstore.Position{}, false, err
	}
	var low eventstore.Position
	for p := range m.partitions {
		c, err := r.be.readCheckpoint(ctx, name, p, m.active)
		if err != nil {
			return eventstore.Position{}, false, err
		}
		if p == 0 || c.pos.Before(low) {
			low = c.pos
		}
	}
	return low, true, nil
}

// WaitFor blocks until the projection's read model may be served and every
// partition of its active namespace has applied pos (read-your-writes for
// a query over the whole model), polling Redis. When ctx's deadline passes first it returns a
// *TimeoutError (matching ErrTimeout and context.DeadlineExceeded); when
// ctx is cancelled, ctx's error.
func (r *Reader) WaitFor(ctx context.Context, name string, pos eventstore.Position) error {
	return waitFor(ctx, name, pos, r.poll, nil, func(ctx context.Context) (eventstore.Position, bool, error) {
		return r.checkpoint(ctx, name)
	})
}

// WaitForStream blocks until the partition that applies streamID's events
// has applied pos: read-your-writes for a query that reads that stream's
// keys only.
func (r *Reader) WaitForStream(ctx context.Context, name, streamID string, pos eventstore.Position) error {
	return waitFor(ctx, name, pos, r.poll, nil, func(ctx context.Context) (eventstore.Position, bool, error) {
		return r.partitionCheckpoint(ctx, name, func(partitions int) int { return eventstore.StreamPartition(streamID, partitions) })
	})
}

// waitFor is WaitFor's loop: check reads the checkpoint; wake, if not nil,
// returns a channel closed when a local commit may have moved it.
func waitFor(ctx context.Context, name string, pos eventstore.Position, maxPoll time.Duration,
	wake func() (<-chan struct{}, eventstore.Position, int64, bool),
	check func(context.Context) (eventstore.Position, bool, error)) error {
	start := time.Now()
	var reached eventstore.Position
	timeout := func() error {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return &TimeoutError{Projection: name, Want: pos, Reached: reached, Waited: time.Since(start)}
		}
		return ctx.Err()
	}
	// Poll quickly at first, then less and less often.
	polls := backoff.New(backoff.Policy{Initial: min(minPollInterval, maxPoll), Max: maxPoll})
	delay := polls.Next()
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for {
		var ch <-chan struct{}
		localActive := false
		if wake != nil {
			c, local, _, ok := wake()
			ch, localActive = c, ok
			if ok {
				if !local.Before(pos) {
					return nil
				}
				reached = local
			}
		}
		// A runner active in this process wakes us on every commit; read
		// Redis when another process may be the active runner, and now
		// and then in any case.
		if !localActive || delay >= maxPoll {
			got, ready, err := check(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return timeout()
				}
				return err
			}
			if ready && !got.Before(pos) {
				return nil
			}
			reached = got
		}
		timer.Reset(delay)
		select {
		case <-ctx.Done():
			return timeout()
		case <-ch:
			if !timer.Stop() {
				<-timer.C
			}
		case <-timer.C:
			delay = polls.Next()
		}
	}
}

// ParkedRecord is a record that a projection could not apply, or that waits
// behind such a record of the same stream.
type ParkedRecord struct {
	Record eventstore.Record
	// Error is the last apply error (or why the record waits).
	Error string
	// Attempts is how many times the record was applied without success.
	Attempts int
	// ParkedAt is when the record was parked (or last retried).
	ParkedAt time.Time
	// BlockedBy is the event ID of the earlier parked record of the same
	// stream this record waits behind; zero when the record failed itself.
	BlockedBy uuid.UUID
	// Partial reports a record whose apply succeeded but one of whose Redis
	// commands failed inside its batch's MULTI/EXEC (a WRONGTYPE, say):
	// Redis has no rollback, so its other commands took effect. Retrying it
	// applies all of them again; skip it when what took effect suffices, or
	// repair the read model (a rebuild) instead.
	Partial bool `json:",omitempty"`
}

func decodeParked(vals map[string]string) ([]ParkedRecord, error) {
	out := make([]ParkedRecord, 0, len(vals))
	for id, s := range vals {
		var p ParkedRecord
		if err := json.Unmarshal([]byte(s), &p); err != nil {
			return nil, fmt.Errorf("projection: parked record %s: %w", id, err)
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b ParkedRecord) int { return a.Record.Position.Compare(b.Record.Position) })
	return out, nil
}

func readParked(ctx context.Context, rdb redis.Cmdable, k keys, p int, v int64) ([]ParkedRecord, error) {
	vals, err := rdb.HGetAll(ctx, k.parked(p, v)).Result()
	if err != nil {
		return nil, fmt.Errorf("projection %q: read parked records: %w", k.name, err)
	}
	return decodeParked(vals)
}

// Parked lists the parked records of the projection's active namespace
// (every partition), in feed order.
func (r *Reader) Parked(ctx context.Context, name string) ([]ParkedRecord, error) {
	m, err := r.be.readMeta(ctx, name)
	if err != nil || m.active == 0 {
		return nil, err
	}
	var out []ParkedRecord
	for p := range m.partitions {
		list, err := r.be.readParked(ctx, name, p, m.active)
		if err != nil {
			return nil, err
		}
		out = append(out, list...)
	}
	slices.SortFunc(out, func(a, b ParkedRecord) int { return a.Record.Position.Compare(b.Record.Position) })
	return out, nil
}

// Status describes a projection's progress.
type Status struct {
	Name string
	// Partitions is the projection's number of partitions.
	Partitions int
	// Version is the active namespace version (0 before the first build
	// completed).
	Version int64
	// Ready reports whether the read model may be served; NotReady says
	// why not.
	Ready    bool
	NotReady string
	// Checkpoint is the position every partition of the active namespace
	// has applied (the lowest partition checkpoint).
	Checkpoint eventstore.Position
	// LastRecordedAt is the RecordedAt of the last record applied.
	LastRecordedAt time.Time
	// Head is the store's head (zero when the reader has no feed).
	Head eventstore.Position
	// LagEvents estimates how many records the slowest partition trails
	// the head by (from the positions' sequence numbers, which may have
	// holes); -1 when unknown.
	LagEvents int64
	// Lag is how long ago the slowest partition's last applied record was
	// written, when it is behind the head (0 when caught up or unknown).
	Lag time.Duration
	// Parked is the number of parked records, over all partitions.
	Parked int
	// Rebuilding is the namespace version being built, or 0; during a
	// first build, the version built.
	Rebuilding int64
	// Owner is the lease owner token of partition 0's runner ("" if none).
	Owner string
	// Active reports whether the runner asked holds a partition (always
	// false from a Reader).
	Active bool
	// LastError is the projection's last recorded error, if any; it is
	// cleared once a partition catches up without errors.
	LastError string
	// LastErrorAt is when LastError happened.
	LastErrorAt time.Time
	// Parts describes each partition.
	Parts []PartitionStatus
}

// PartitionStatus describes one partition of a projection.
type PartitionStatus struct {
	Partition int
	// Owner is the lease owner token of the runner applying it ("" if none).
	Owner string
	// LeaseToken is the fencing token of Owner's lease (0 if none): it
	// grows with every takeover.
	LeaseToken uint64 `json:",omitempty"`
	// Checkpoint is the position the partition has applied; Verified the
	// position up to which it has been compared with the store's feed.
	Checkpoint eventstore.Position
	Verified   eventstore.Position
	// LagEvents and Lag are as in Status, for this partition.
	LagEvents int64
	Lag       time.Duration
	// Parked is the number of the partition's parked records.
	Parked int
	// Building is the checkpoint of the namespace being built (first
	// build, rebuild, or a partition rebuilt after losing its data), and
	// BuildLagEvents how many records it trails the head by; zero and -1
	// when nothing is built.
	Building       eventstore.Position
	BuildLagEvents int64
	// LastRecordedAt is the RecordedAt of its last applied record.
	LastRecordedAt time.Time
}

// Status returns the projection's status as stored in Redis (and the
// store's head, when the reader has a feed).
func (r *Reader) Status(ctx context.Context, name string) (Status, error) {
	st := Status{Name: name, LagEvents: -1}
	m, err := r.be.readMeta(ctx, name)
	if err != nil {
		return st, err
	}
	st.Partitions, st.Version = m.partitions, m.active
	if err := m.ready(name); err != nil {
		var nr *NotReadyError
		if errors.As(err, &nr) {
			st.NotReady = nr.Reason
		}
	} else {
		st.Ready = true
	}
	st.Rebuilding = m.rebuild
	building := m.rebuild
	if m.active == 0 {
		st.Rebuilding, building = m.building, m.building
	}
	var head eventstore.Position
	haveHead := false
	if r.feed != nil {
		if head, err = r.feed.Head(ctx); err != nil {
			return st, fmt.Errorf("projection %q: read head: %w", name, err)
		}
		st.Head, haveHead = head, true
	}
	parts, lastErr, err := r.be.partStatus(ctx, name, m.partitions, m.active, building)
	if err != nil {
		return st, err
	}
	all := make([]int, m.partitions)
	for p := range all {
		all[p] = p
	}
	owners, err := r.be.currentLeases(ctx, name, all)
	if err != nil {
		return st, fmt.Errorf("projection %q: read status: %w", name, err)
	}
	now := time.Now()
	for p := range m.partitions {
		ps := PartitionStatus{Partition: p, LagEvents: -1, BuildLagEvents: -1}
		if owners[p].ok {
			ps.Owner, ps.LeaseToken = owners[p].Holder, owners[p].Token
		}
		if c := parts[p].ckpt; c != nil {
			ps.Checkpoint, ps.Verified, ps.LastRecordedAt = c.pos, c.verified, c.lastAt
			ps.Parked = parts[p].parked
		}
		if c := parts[p].build; c != nil {
			ps.Building = c.verified
			if haveHead {
				ps.BuildLagEvents = eventstore.EventsBetween(c.verified, head)
			}
		}
		if haveHead {
			ps.LagEvents = eventstore.EventsBetween(ps.Checkpoint, head)
			if ps.LagEvents > 0 && !ps.LastRecordedAt.IsZero() {
				ps.Lag = max(now.Sub(ps.LastRecordedAt), 0)
			}
		}
		st.Parts = append(st.Parts, ps)
		st.Parked += ps.Parked
		if p == 0 || ps.Checkpoint.Before(st.Checkpoint) {
			st.Checkpoint = ps.Checkpoint
		}
		if ps.LastRecordedAt.After(st.LastRecordedAt) {
			st.LastRecordedAt = ps.LastRecordedAt
		}
		if ps.LagEvents > st.LagEvents {
			st.LagEvents = ps.LagEvents
		}
		st.Lag = max(st.Lag, ps.Lag)
	}
	if len(st.Parts) > 0 {
		st.Owner = st.Parts[0].Owner
	}
	st.LastError, st.LastErrorAt = lastErr.msg, lastErr.at
	return st, nil
}

// BuildProgress is how far the build of a version (a first build or a
// blue/green rebuild) has come: the records of the feed its slowest
// partition has read into the version, out of the feed's records up to
// the head.
type BuildProgress struct {
	Version int64
	// Done and Total count records; Total is -1 when the head is unknown
	// (then Done is too).
	Done, Total int64
	// Position is the slowest partition's build checkpoint.
	Position eventstore.Position
	// Partitions is the number of partitions; Unowned those no runner
	// holds (their part of the build does not advance).
	Partitions int
	Unowned    []int
}

// Count is what the build has done: its records, or its position's
// sequence number when the total is unknown.
func (b BuildProgress) Count() int64 {
	if b.Total < 0 {
		return int64(b.Position.Seq)
	}
	return b.Done
}

// BuildProgress returns the progress of the version being built; false
// when nothing is built.
func (st Status) BuildProgress() (BuildProgress, bool) {
	if st.Rebuilding == 0 || len(st.Parts) == 0 {
		return BuildProgress{}, false
	}
	p := BuildProgress{Version: st.Rebuilding, Done: -1, Total: -1, Partitions: len(st.Parts)}
	// Each partition reads the whole feed (applying its own streams), so
	// each one's progress is measured against the whole feed: the total
	// is the feed's records up to the head, which is how far a partition
	// at the start of the feed trails it.
	known := true
	for i, ps := range st.Parts {
		if ps.Owner == "" {
			p.Unowned = append(p.Unowned, ps.Partition)
		}
		if ps.BuildLagEvents < 0 {
			known = false
		}
		if i == 0 || ps.Building.Before(p.Position) {
			p.Position = ps.Building
		}
	}
	if known {
		total := int64(st.Head.Seq)
		p.Total, p.Done = total, total
		for _, ps := range st.Parts {
			p.Done = min(p.Done, max(total-ps.BuildLagEvents, 0))
		}
	}
	return p, true
}

// fillLag computes the lag fields from Head, Checkpoint and LastRecordedAt.
func fillLag(st *Status, now time.Time) {
	st.LagEvents = eventstore.EventsBetween(st.Checkpoint, st.Head)
	st.Lag = 0
	if st.LagEvents > 0 && !st.LastRecordedAt.IsZero() {
		st.Lag = max(now.Sub(st.LastRecordedAt), 0)
	}
}
