package projection

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/eventstore"
)

// load reads the namespace the partition must write: the active one, or
// the one its projection's first build writes. A partition of the active
// namespace whose checkpoint is gone lost its data: it is marked lost (the
// read model is not served until it is rebuilt) and rebuilt in place from
// the store.
func (r *Runner) load(ctx context.Context, pt *part) (*nsState, error) {
	pr := pt.pr
	before, err := r.be.readMeta(ctx, pr.name)
	if err != nil {
		return nil, err
	}
	// The registry and the meta may be gone with the data (a flush): put
	// them back, so operators' tools see the projection at once.
	if err := r.be.register(ctx, pr.name, pr.partitions); err != nil {
		return nil, err
	}
	m, err := r.be.readMeta(ctx, pr.name)
	if err != nil {
		return nil, err
	}
	// What this runner committed had its side effects: if Redis holds
	// less, those records are replayed. The hint only grows.
	hint := pt.replayHint
	if m.active == 0 {
		// First build: the version and the end of its history are fixed
		// by the first runner to get here, so all partitions and every
		// runner that takes one over replay the same history.
		if m.building == 0 || m.until.IsZero() {
			head, err := r.src.Head(ctx)
			if err != nil {
				return nil, fmt.Errorf("projection %q: first build: read the feed's head: %w", pr.name, err)
			}
			if err := r.be.beginBuild(ctx, pr.name, 1, head.String()); err != nil {
				return nil, err
			}
		}
		if m, err = r.be.readMeta(ctx, pr.name); err != nil {
			return nil, err
		}
		if m.active != 0 {
			return r.load(ctx, pt)
		}
		st, err := r.loadNamespace(ctx, pt, m.building)
		if err != nil {
			return nil, err
		}
		if !st.ckpt.exists {
			if err := r.clearPartition(ctx, pt); err != nil {
				return nil, err
			}
			st.complete = true
		}
		// History is what the feed held when the build began (and what
		// this runner committed). When the meta itself was gone (Redis
		// lost the projection) and this runner applied the partition
		// before, history is exactly what it had committed: later records
		// never had their side effects.
		st.replayUntil = maxPosition(m.until, hint)
		if !before.exists && !hint.IsZero() {
			st.replayUntil = hint
		}
		st.replay = st.ckpt.pos.Before(st.replayUntil)
		st.unswitched = true
		return st, nil
	}
	st, err := r.loadNamespace(ctx, pt, m.active)
	if err != nil {
		return nil, err
	}
	if !st.ckpt.exists {
		// Every partition of a built namespace has a checkpoint: this one
		// lost its data. Readers are told the model is not ready until the
		// partition is rebuilt; its history is replayed (no side effects)
		// up to the head of now.
		head, herr := r.src.Head(ctx)
		if herr != nil {
			return nil, fmt.Errorf("projection %q: read the feed's head: %w", pr.name, herr)
		}
		pt.log.Error("projection partition lost its data; rebuilding it from the store", "version", m.active)
		r.recordError(pr, fmt.Errorf("partition %d of v%d lost its data; rebuilding it from the store", pt.idx, m.active))
		if err := r.be.markLost(ctx, pr.name, pt.idx, m.active); err != nil {
			return nil, err
		}
		if _, err := r.be.deleteVersion(ctx, pr.name, pt.idx, m.active); err != nil {
			return nil, err
		}
		st.complete = true
		st.replay, st.replayUntil = true, head
		if !hint.IsZero() {
			st.replayUntil = hint
		}
		st.lost = true
		return st, nil
	}
	if !hint.IsZero() && st.ckpt.pos.Before(hint) {
		// Redis went back in time under this runner: what it applied after
		// the stored checkpoint already had its side effects.
		st.replay, st.replayUntil = true, hint
	}
	return st, nil
}

// clearPartition deletes every versioned key of a partition that has no
// active namespace (leftovers of an earlier, lost build).
func (r *Runner) clearPartition(ctx context.Context, pt *part) error {
	return r.be.deleteVersions(ctx, pt.pr.name, pt.idx)
}

func maxPosition(a, b eventstore.Position) eventstore.Position {
	if a.Before(b) {
		return b
	}
	return a
}

// loadNamespace reads a partition's checkpoint and parked records of
// namespace v.
func (r *Runner) loadNamespace(ctx context.Context, pt *part, v int64) (*nsState, error) {
	k := pt.pr.k
	c, err := r.be.readCheckpoint(ctx, pt.pr.name, pt.idx, v)
	if err != nil {
		return nil, err
	}
	parked, err := r.be.readParked(ctx, pt.pr.name, pt.idx, v)
	if err != nil {
		return nil, err
	}
	st := &nsState{ns: k.namespace(v, pt.idx, pt.pr.partitions), ckpt: c, versions: make(map[string]int64)}
	st.setParked(parked)
	return st, nil
}

// readCheckpoint reads a partition's checkpoint of namespace v.
func readCheckpoint(ctx context.Context, rdb redis.Cmdable, k keys, p int, v int64) (checkpoint, error) {
	vals, err := rdb.HGetAll(ctx, k.checkpoint(p, v)).Result()
	if err != nil {
		return checkpoint{}, fmt.Errorf("projection %q: read checkpoint: %w", k.name, err)
	}
	return parseCheckpoint(k.name, vals)
}
