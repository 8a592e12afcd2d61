package projection

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

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
	rdb    redis.UniversalClient
	prefix string
	feed   eventstore.FeedReader
	poll   time.Duration
}

// NewReader returns a Reader of the projections under prefix. feed is
// optional: with it, Status reports the lag behind the store's head.
func NewReader(rdb redis.UniversalClient, prefix string, feed eventstore.FeedReader) *Reader {
	return &Reader{rdb: rdb, prefix: prefix, feed: feed, poll: DefaultPollInterval}
}

func (r *Reader) keys(name string) keys { return newKeys(r.prefix, name) }

// Namespace returns the projection's active namespace: the one readers
// should query. Before the first build it is version 1.
func (r *Reader) Namespace(ctx context.Context, name string) (Namespace, error) {
	k := r.keys(name)
	v, err := activeVersion(ctx, r.rdb, k)
	if err != nil {
		return Namespace{}, err
	}
	return k.namespace(v), nil
}

// Key returns a key of the projection's active namespace (see
// Namespace.Key).
func (r *Reader) Key(ctx context.Context, name string, parts ...string) (string, error) {
	ns, err := r.Namespace(ctx, name)
	if err != nil {
		return "", err
	}
	return ns.Key(parts...), nil
}

func activeVersion(ctx context.Context, rdb redis.Cmdable, k keys) (int64, error) {
	s, err := rdb.Get(ctx, k.active()).Result()
	if errors.Is(err, redis.Nil) {
		return 1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("projection %q: read active namespace: %w", k.name, err)
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 1 {
		return 0, fmt.Errorf("projection %q: bad active namespace %q", k.name, s)
	}
	return v, nil
}

// checkpoint is a namespace's progress.
type checkpoint struct {
	pos    eventstore.Position
	lastAt time.Time // RecordedAt of the last applied record
}

func readCheckpoint(ctx context.Context, rdb redis.Cmdable, k keys, v int64) (checkpoint, error) {
	vals, err := rdb.HMGet(ctx, k.checkpoint(v), "pos", "at").Result()
	if err != nil {
		return checkpoint{}, fmt.Errorf("projection %q: read checkpoint: %w", k.name, err)
	}
	var c checkpoint
	if s, ok := vals[0].(string); ok {
		if c.pos, err = eventstore.ParsePosition(s); err != nil {
			return checkpoint{}, fmt.Errorf("projection %q: checkpoint: %w", k.name, err)
		}
	}
	if s, ok := vals[1].(string); ok && s != "" {
		ns, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return checkpoint{}, fmt.Errorf("projection %q: checkpoint time %q: %w", k.name, s, err)
		}
		c.lastAt = time.Unix(0, ns).UTC()
	}
	return c, nil
}

// writeCheckpoint queues the checkpoint write.
func writeCheckpoint(ctx context.Context, p redis.Pipeliner, k keys, v int64, c checkpoint) redis.Cmder {
	at := ""
	if !c.lastAt.IsZero() {
		at = strconv.FormatInt(c.lastAt.UnixNano(), 10)
	}
	return p.HSet(ctx, k.checkpoint(v), "pos", c.pos.String(), "at", at)
}

// Checkpoint returns the position the projection's active namespace has
// applied.
func (r *Reader) Checkpoint(ctx context.Context, name string) (eventstore.Position, error) {
	k := r.keys(name)
	v, err := activeVersion(ctx, r.rdb, k)
	if err != nil {
		return eventstore.Position{}, err
	}
	c, err := readCheckpoint(ctx, r.rdb, k, v)
	return c.pos, err
}

// WaitFor blocks until the projection's active checkpoint reaches pos
// (read-your-writes), polling Redis. When ctx's deadline passes first it
// returns a *TimeoutError (matching ErrTimeout and
// context.DeadlineExceeded); when ctx is cancelled, ctx's error.
func (r *Reader) WaitFor(ctx context.Context, name string, pos eventstore.Position) error {
	return waitFor(ctx, name, pos, r.poll, nil, func(ctx context.Context) (eventstore.Position, error) {
		return r.Checkpoint(ctx, name)
	})
}

// waitFor is WaitFor's loop: check reads the checkpoint; wake, if not nil,
// returns a channel closed when a local commit may have moved it.
func waitFor(ctx context.Context, name string, pos eventstore.Position, maxPoll time.Duration,
	wake func() (<-chan struct{}, eventstore.Position, bool),
	check func(context.Context) (eventstore.Position, error)) error {
	start := time.Now()
	var reached eventstore.Position
	timeout := func() error {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return &TimeoutError{Projection: name, Want: pos, Reached: reached, Waited: time.Since(start)}
		}
		return ctx.Err()
	}
	delay := min(minPollInterval, maxPoll)
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for {
		var ch <-chan struct{}
		localActive := false
		if wake != nil {
			c, local, ok := wake()
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
			// Read Redis: another process may be the active runner.
			got, err := check(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return timeout()
				}
				return err
			}
			if !got.Before(pos) {
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
			delay = min(delay*2, maxPoll)
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

func readParked(ctx context.Context, rdb redis.Cmdable, k keys, v int64) ([]ParkedRecord, error) {
	vals, err := rdb.HGetAll(ctx, k.parked(v)).Result()
	if err != nil {
		return nil, fmt.Errorf("projection %q: read parked records: %w", k.name, err)
	}
	return decodeParked(vals)
}

// Parked lists the parked records of the projection's active namespace, in
// feed order.
func (r *Reader) Parked(ctx context.Context, name string) ([]ParkedRecord, error) {
	k := r.keys(name)
	v, err := activeVersion(ctx, r.rdb, k)
	if err != nil {
		return nil, err
	}
	return readParked(ctx, r.rdb, k, v)
}

// Status describes a projection's progress.
type Status struct {
	Name string
	// Version is the active namespace version.
	Version int64
	// Checkpoint is the position the active namespace has applied.
	Checkpoint eventstore.Position
	// LastRecordedAt is the RecordedAt of the last record applied.
	LastRecordedAt time.Time
	// Head is the store's head (zero when the reader has no feed).
	Head eventstore.Position
	// LagEvents estimates how many records the projection trails the head
	// by (from the positions' sequence numbers, which may have holes); -1
	// when unknown.
	LagEvents int64
	// Lag is how long ago the last applied record was written, when the
	// projection is behind the head (0 when caught up or unknown).
	Lag time.Duration
	// Parked is the number of parked records.
	Parked int
	// Rebuilding is the namespace version being built, or 0.
	Rebuilding int64
	// Owner is the lease owner token of the active runner ("" if none).
	Owner string
	// Active reports whether the runner asked holds the lease (always
	// false from a Reader).
	Active bool
	// LastError is the projection's last recorded error, if any.
	LastError string
	// LastErrorAt is when LastError happened.
	LastErrorAt time.Time
}

// Status returns the projection's status as stored in Redis (and the
// store's head, when the reader has a feed).
func (r *Reader) Status(ctx context.Context, name string) (Status, error) {
	k := r.keys(name)
	st := Status{Name: name, LagEvents: -1}
	v, err := activeVersion(ctx, r.rdb, k)
	if err != nil {
		return st, err
	}
	st.Version = v
	c, err := readCheckpoint(ctx, r.rdb, k, v)
	if err != nil {
		return st, err
	}
	st.Checkpoint, st.LastRecordedAt = c.pos, c.lastAt
	pipe := r.rdb.Pipeline()
	nParked := pipe.HLen(ctx, k.parked(v))
	rebuild := pipe.Get(ctx, k.rebuild())
	owner := pipe.Get(ctx, k.lease())
	lastErr := pipe.HMGet(ctx, k.lastError(), "msg", "at")
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return st, fmt.Errorf("projection %q: read status: %w", name, err)
	}
	st.Parked = int(nParked.Val())
	st.Rebuilding, _ = strconv.ParseInt(rebuild.Val(), 10, 64)
	st.Owner = owner.Val()
	if vals := lastErr.Val(); len(vals) == 2 {
		if s, ok := vals[0].(string); ok {
			st.LastError = s
		}
		if s, ok := vals[1].(string); ok {
			if ns, err := strconv.ParseInt(s, 10, 64); err == nil {
				st.LastErrorAt = time.Unix(0, ns).UTC()
			}
		}
	}
	if r.feed != nil {
		head, err := r.feed.Head(ctx)
		if err != nil {
			return st, fmt.Errorf("projection %q: read head: %w", name, err)
		}
		st.Head = head
		fillLag(&st, time.Now())
	}
	return st, nil
}

// fillLag computes the lag fields from Head, Checkpoint and LastRecordedAt.
func fillLag(st *Status, now time.Time) {
	if !st.Head.After(st.Checkpoint) {
		st.LagEvents, st.Lag = 0, 0
		return
	}
	if st.Head.Seq > st.Checkpoint.Seq {
		st.LagEvents = int64(st.Head.Seq - st.Checkpoint.Seq)
	} else {
		st.LagEvents = 1
	}
	if !st.LastRecordedAt.IsZero() {
		st.Lag = max(now.Sub(st.LastRecordedAt), 0)
	}
}
