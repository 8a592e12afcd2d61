package projection

import (
	"context"
	"time"

	"github.com/eskit/eskit/eventstore"
)

// recordError keeps err as the projection's last error, locally and in
// Redis.
func (r *Runner) recordError(pr *proj, err error) {
	now := time.Now()
	pr.vmu.Lock()
	pr.lastErr, pr.lastErrAt = err, now
	pr.vmu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = r.be.recordError(ctx, pr.name, err.Error(), now)
}

// clearErrorBefore forgets the projection's last error, locally and in
// Redis, when it happened before t: a partition caught up without errors
// since.
func (r *Runner) clearErrorBefore(ctx context.Context, pr *proj, t time.Time) {
	pr.vmu.Lock()
	if pr.lastErr != nil && pr.lastErrAt.Before(t) {
		pr.lastErr, pr.lastErrAt = nil, time.Time{}
	}
	pr.vmu.Unlock()
	_ = r.be.clearErrorBefore(ctx, pr.name, t)
}

const clearErrorLua = `
local at = tonumber(redis.call('HGET', KEYS[1], 'at') or '0')
if at < tonumber(ARGV[1]) then
  return redis.call('DEL', KEYS[1])
end
return 0`

// Active reports whether this runner currently holds at least one of the
// projection's partitions and applies it.
func (r *Runner) Active(name string) bool {
	pr, ok := r.projs[name]
	if !ok {
		return false
	}
	for _, pt := range pr.parts {
		pt.vmu.Lock()
		a := pt.active
		pt.vmu.Unlock()
		if a {
			return true
		}
	}
	return false
}

// Held returns the partitions of the projection this runner holds.
func (r *Runner) Held(name string) []int {
	pr, ok := r.projs[name]
	if !ok {
		return nil
	}
	var out []int
	for _, pt := range pr.parts {
		pt.vmu.Lock()
		if pt.active {
			out = append(out, pt.idx)
		}
		pt.vmu.Unlock()
	}
	return out
}

// Following reports whether this runner holds at least one of the
// projection's partitions and every partition it holds has caught up with
// the store and follows new records (live from JetStream, or the feed).
func (r *Runner) Following(name string) bool {
	pr, ok := r.projs[name]
	if !ok {
		return false
	}
	held := 0
	for _, pt := range pr.parts {
		pt.vmu.Lock()
		active := pt.active
		pt.vmu.Unlock()
		if !active {
			continue
		}
		if !pt.following.Load() {
			return false
		}
		held++
	}
	return held > 0
}

// Namespace returns the projection's active namespace (see
// Reader.Namespace).
func (r *Runner) Namespace(ctx context.Context, name string) (Namespace, error) {
	return r.reader.Namespace(ctx, name)
}

// Status returns the projection's status (see Reader.Status), with Active
// and this runner's last error.
func (r *Runner) Status(ctx context.Context, name string) (Status, error) {
	pr, err := r.proj(name)
	if err != nil {
		return Status{}, err
	}
	st, err := r.reader.Status(ctx, name)
	st.Active = r.Active(name)
	pr.vmu.Lock()
	if pr.lastErr != nil && pr.lastErrAt.After(st.LastErrorAt) {
		st.LastError, st.LastErrorAt = pr.lastErr.Error(), pr.lastErrAt
	}
	pr.vmu.Unlock()
	return st, err
}

// Parked lists the parked records of the projection's active namespace.
func (r *Runner) Parked(ctx context.Context, name string) ([]ParkedRecord, error) {
	if _, err := r.proj(name); err != nil {
		return nil, err
	}
	return r.reader.Parked(ctx, name)
}

// WaitFor blocks until every partition of the projection's active
// namespace has applied pos (see Reader.WaitFor). Commits of this runner
// wake it at once; progress made by other processes is seen by polling
// Redis.
func (r *Runner) WaitFor(ctx context.Context, name string, pos eventstore.Position) error {
	return r.waitFor(ctx, name, "", pos)
}

// WaitForStream blocks until the partition that applies streamID has
// applied pos: read-your-writes for a query that reads one stream's keys.
func (r *Runner) WaitForStream(ctx context.Context, name, streamID string, pos eventstore.Position) error {
	return r.waitFor(ctx, name, streamID, pos)
}

func (r *Runner) waitFor(ctx context.Context, name, streamID string, pos eventstore.Position) error {
	pr, ok := r.projs[name]
	if !ok {
		if streamID != "" {
			return r.reader.WaitForStream(ctx, name, streamID, pos)
		}
		return r.reader.WaitFor(ctx, name, pos)
	}
	parts := pr.parts
	if streamID != "" {
		parts = []*part{pr.parts[eventstore.StreamPartition(streamID, pr.partitions)]}
	}
	for _, pt := range parts {
		err := waitFor(ctx, name, pos, r.cfg.poll, pt.wake, func(ctx context.Context) (eventstore.Position, bool, error) {
			return r.reader.partitionCheckpoint(ctx, name, func(int) int { return pt.idx })
		})
		if err != nil {
			return err
		}
	}
	return nil
}
