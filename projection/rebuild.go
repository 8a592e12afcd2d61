package projection

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/eskit/eskit/eventstore"
)

// startRebuildLua marks a blue/green rebuild of version active+1, unless
// the projection has no active version or a rebuild is marked already. It
// returns the version, 0 when there is nothing to rebuild yet, or -N when
// version N is being rebuilt already.
const startRebuildLua = `
local active = tonumber(redis.call('HGET', KEYS[1], 'active') or '0')
if active == 0 then
  return 0
end
local cur = redis.call('HGET', KEYS[1], 'rebuild')
if cur then
  return -tonumber(cur)
end
redis.call('HSET', KEYS[1], 'rebuild', active + 1)
return active + 1`

// cancelRebuildLua removes the rebuild mark if it still names ARGV[1].
const cancelRebuildLua = `
if redis.call('HGET', KEYS[1], 'rebuild') == ARGV[1] then
  return redis.call('HDEL', KEYS[1], 'rebuild')
end
return 0`

// Rebuild builds a new version of the projection's read model from the
// store's feed, without downtime (see Reader.Rebuild).
func (r *Runner) Rebuild(ctx context.Context, name string) error {
	pr, err := r.proj(name)
	if err != nil {
		return err
	}
	// The partitions this runner holds start at once, and the switch, when
	// this runner makes it, ends the wait at once.
	_, err = r.reader.rebuild(ctx, name, func() {
		for _, pt := range pr.parts {
			pt.poke()
		}
	}, pr.switchedChan)
	return err
}

// Rebuild asks the projection's runners to build version V+1 of its read
// model from the store's feed while V keeps serving, and waits until the
// readers have switched to it; it returns the new version. Every partition
// owner builds its part of V+1 (as replays: Batch.Replay is true, no side
// effects), and once it has caught up with V applies every further batch
// to both namespaces in one MULTI/EXEC; when every partition is caught up
// the active pointer switches to V+1 in one write, so all partitions
// switch at once, and V's keys are deleted in the background. It fails at
// once with ErrNoActiveRunner when no runner holds any of the projection's
// partitions, with ErrRebuildInProgress when a rebuild runs already, and
// with ErrNotReady before the first build completed. When ctx ends first,
// the rebuild is called off (V keeps serving).
func (rd *Reader) Rebuild(ctx context.Context, name string) (int64, error) {
	return rd.rebuild(ctx, name, nil, nil)
}

// rebuild is Rebuild; marked, if not nil, is called once the rebuild is
// marked, and switched, if not nil, returns a channel that may be closed
// when the active version switches (the wait reads the meta then).
func (rd *Reader) rebuild(ctx context.Context, name string, marked func(), switched func() <-chan struct{}) (int64, error) {
	m, err := rd.be.readMeta(ctx, name)
	if err != nil {
		return 0, err
	}
	if !m.exists {
		return 0, fmt.Errorf("%w: %q", ErrUnknownProjection, name)
	}
	if holders, err := rd.holders(ctx, name, m.partitions); err != nil {
		return 0, err
	} else if holders == 0 {
		return 0, fmt.Errorf("projection %q: %w: no runner holds any of its %d partitions", name, ErrNoActiveRunner, m.partitions)
	}
	v, err := rd.be.startRebuild(ctx, name)
	switch {
	case err != nil:
		return 0, err
	case v == 0:
		return 0, &NotReadyError{Projection: name, Reason: "first build running"}
	case v < 0:
		return 0, fmt.Errorf("%w: %q: version %d", ErrRebuildInProgress, name, -v)
	}
	if marked != nil {
		marked()
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	var sw <-chan struct{}
	if switched != nil {
		sw = switched()
	}
	for {
		select {
		case <-ctx.Done():
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = rd.be.cancelRebuild(cctx, name, v)
			cancel()
			return 0, fmt.Errorf("projection %q: rebuild of v%d called off: %w", name, v, ctx.Err())
		case <-t.C:
		case <-sw:
		}
		if switched != nil {
			// Taken before the read: a switch after it closes this one.
			sw = switched()
		}
		m, err := rd.be.readMeta(ctx, name)
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			return 0, err
		}
		switch {
		case m.active >= v:
			return v, nil
		case m.rebuild != v:
			return 0, fmt.Errorf("projection %q: rebuild of v%d was called off", name, v)
		}
	}
}

// holders counts the partitions whose lease some runner holds.
func (rd *Reader) holders(ctx context.Context, name string, partitions int) (int, error) {
	all := make([]int, partitions)
	for p := range all {
		all[p] = p
	}
	owners, err := rd.be.currentLeases(ctx, name, all)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, o := range owners {
		if o.ok {
			n++
		}
	}
	return n, nil
}

// rebuildStep advances the partition's part of a blue/green rebuild of
// version v: it starts it (clearing leftovers of an abandoned build of v),
// applies one page of the feed to it, never past the serving namespace's
// verified position, and once it has caught up makes it follow the serving
// namespace and marks it ready. The caller holds pt.mu.
func (r *Runner) rebuildStep(ctx context.Context, pt *part, v int64, m *maintenance) error {
	pr := pt.pr
	if pt.next == nil || pt.next.ns.Version != v {
		if _, err := r.be.deleteVersion(ctx, pr.name, pt.idx, v); err != nil {
			return err
		}
		pt.next = &nsState{ns: pr.k.namespace(v, pt.idx, pr.partitions), replay: true,
			blocked: make(map[string]eventstoreID), versions: make(map[string]int64), complete: true}
		pt.rebuildProgress = newProgress(pt.log.With("version", v), "projection rebuilding", eventstore.Position{})
		pt.log.Info("projection rebuild started", "namespace", pt.next.ns.String())
	}
	next, cur := pt.next, pt.cur
	if !next.following {
		target := cur.ckpt.verified
		if next.ckpt.verified.Before(target) {
			recs, err := r.readFeed(ctx, pt, next.ckpt.verified, true)
			if err != nil {
				return fmt.Errorf("projection %q: rebuild: read feed: %w", pr.name, err)
			}
			end := len(recs)
			for end > 0 && recs[end-1].Position.After(target) {
				end--
			}
			readTo := target
			if end == len(recs) && len(recs) == r.cfg.batchSize {
				readTo = recs[end-1].Position
			}
			if err := r.applyBatch(ctx, pt, []*nsState{next}, pt.mine(recs[:end]), readTo); err != nil {
				return fmt.Errorf("projection %q: rebuild: %w", pr.name, err)
			}
		}
		if next.ckpt.verified.Before(target) {
			pt.rebuildProgress.step(ctx, r.src, next.ckpt.verified)
			return nil
		}
		pt.rebuildProgress.done(next.ckpt.verified)
		// Caught up: from now on every batch goes to both namespaces, and
		// the live records the serving one has beyond its verified
		// position reach the new one through the next verification.
		next.following = true
		next.readyAt = cur.ckpt.pos
		pt.log.Info("projection rebuild caught up", "namespace", next.ns.String(), "checkpoint", next.ckpt.verified.String())
	}
	if next.ckpt.verified.Before(next.readyAt) {
		// The serving namespace has live records beyond its verified
		// position that the new one may lack: verify both against the
		// store before the new one may serve.
		m.verifyNow = true
		return nil
	}
	if err := r.markReady(ctx, pt, next); err != nil {
		return err
	}
	switched, err := r.trySwitch(ctx, pr, v, "rebuild")
	if switched {
		pr.signalSwitched()
	}
	return err
}

// switchTo makes the rebuilt namespace the serving one, after the
// projection's active pointer moved to it, and deletes the old one's keys
// of this partition in the background. The caller holds pt.mu.
func (r *Runner) switchTo(ctx context.Context, pt *part) error {
	old, next := pt.cur, pt.next
	old.serving = false
	next.serving, next.following = true, false
	// Records the old namespace applied are not new to the new one.
	next.replay, next.replayUntil = true, maxPosition(old.ckpt.pos, next.ckpt.pos)
	pt.cur, pt.next = next, nil
	pt.publish(next)
	pt.log.Info("projection rebuild switched", "namespace", next.ns.String(), "checkpoint", next.ckpt.pos.String())
	pr, idx, oldV := pt.pr, pt.idx, old.ns.Version
	r.background(func(ctx context.Context) {
		deleted, err := r.be.deleteVersion(ctx, pr.name, idx, oldV)
		if err != nil && !errors.Is(err, context.Canceled) {
			r.recordError(pr, fmt.Errorf("delete namespace v%d of partition %d: %w", oldV, idx, err))
			return
		}
		pt.log.Info("projection old namespace deleted", "version", oldV, "keys", deleted)
	})
	return nil
}

// dropRebuild forgets a rebuild that was called off and deletes what it
// wrote. The caller holds pt.mu.
func (r *Runner) dropRebuild(pt *part) {
	if pt.next == nil {
		return
	}
	pr, idx, v := pt.pr, pt.idx, pt.next.ns.Version
	pt.next = nil
	pt.log.Info("projection rebuild called off", "version", v)
	r.background(func(ctx context.Context) {
		_, _ = r.be.deleteVersion(ctx, pr.name, idx, v)
	})
}
