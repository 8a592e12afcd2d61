package projection

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/eventstore"
)

// Rebuild builds a new version of the projection's read model from the
// store's feed, without downtime: namespace V+1 is built while V keeps
// serving (and following live events); once V+1 has caught up, the live
// side pauses, V+1 applies the remainder up to V's checkpoint (or the head),
// the pointer switches to V+1 in one atomic write, live resumes on V+1, and
// V's keys are deleted in the background. Records applied while building
// V+1 are replays (Batch.Replay). The runner must be the projection's active
// runner (ErrNotActive otherwise); Rebuild returns once the pointer has
// switched, and gives up (leaving V serving) when ctx ends or the lease is
// lost.
func (r *Runner) Rebuild(ctx context.Context, name string) error {
	pr, err := r.proj(name)
	if err != nil {
		return err
	}
	if !pr.rebuilding.CompareAndSwap(false, true) {
		return fmt.Errorf("%w: %q", ErrRebuildInProgress, name)
	}
	defer pr.rebuilding.Store(false)

	pr.mu.Lock()
	old, sessCtx, err := pr.activeState()
	pr.mu.Unlock()
	if err != nil {
		return err
	}
	// Stop when the caller gives up or the session ends (lease lost).
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(sessCtx, cancel)
	defer stop()

	log := r.log.With("projection", name)
	v := old.ns.Version + 1
	start := time.Now()
	// Leftovers of an abandoned rebuild of the same version.
	if _, err := deleteMatching(ctx, r.rdb, pr.k.patterns(v)); err != nil {
		return fmt.Errorf("projection %q: clear namespace v%d: %w", name, v, err)
	}
	if err := r.rdb.Set(ctx, pr.k.rebuild(), v, 0).Err(); err != nil {
		return fmt.Errorf("projection %q: mark rebuild: %w", name, err)
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer dcancel()
		_ = r.rdb.Del(dctx, pr.k.rebuild()).Err()
	}()
	log.Info("projection rebuild started", "namespace", pr.k.namespace(v).String())

	// Build v from the feed, never past the serving namespace's
	// checkpoint: every record up to the switch is applied live to the
	// serving namespace once (side effects fire there), and replayed here.
	next := &nsState{ns: pr.k.namespace(v), replay: true, blocked: make(map[string]eventstoreID)}
	n := 0
	for {
		_, target, _ := pr.wake()
		k, err := r.rebuildPage(ctx, pr, next, target)
		if err != nil {
			return err
		}
		n += k
		if k == 0 {
			break
		}
	}

	// Pause live, finish the remainder and switch.
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.cur != old {
		return fmt.Errorf("%w: %q: the session ended during the rebuild", ErrNotActive, name)
	}
	for {
		k, err := r.rebuildPage(ctx, pr, next, old.ckpt.pos)
		if err != nil {
			return err
		}
		n += k
		if k == 0 {
			break
		}
	}
	if err := r.commit(ctx, pr, func(p redis.Pipeliner) redis.Cmder {
		return p.Set(ctx, pr.k.active(), v, 0)
	}); err != nil {
		return fmt.Errorf("projection %q: rebuild: switch: %w", name, err)
	}
	next.replay = false
	old.serving, next.serving = false, true
	pr.cur = next
	pr.publish(next)
	log.Info("projection rebuild switched", "namespace", next.ns.String(), "records", n,
		"checkpoint", next.ckpt.pos.String(), "took", time.Since(start))

	oldNS := old.ns
	r.background(func(ctx context.Context) {
		deleted, err := deleteMatching(ctx, r.rdb, pr.k.patterns(oldNS.Version))
		if err != nil && !errors.Is(err, context.Canceled) {
			r.recordError(pr, fmt.Errorf("delete namespace %s: %w", oldNS, err))
			return
		}
		log.Info("projection old namespace deleted", "namespace", oldNS.String(), "keys", deleted)
	})
	return nil
}

// rebuildPage applies the next page of the feed after st's checkpoint, up to
// target, to st; it returns how many records it applied.
func (r *Runner) rebuildPage(ctx context.Context, pr *proj, st *nsState, target eventstore.Position) (int, error) {
	if !st.ckpt.pos.Before(target) {
		return 0, nil
	}
	recs, err := r.feed.ReadAll(ctx, st.ckpt.pos, r.cfg.batchSize)
	if err != nil {
		return 0, fmt.Errorf("projection %q: rebuild: read feed: %w", pr.name, err)
	}
	end := len(recs)
	for end > 0 && recs[end-1].Position.After(target) {
		end--
	}
	if end == 0 {
		return 0, nil
	}
	if err := r.applyBatch(ctx, pr, st, recs[:end]); err != nil {
		return 0, fmt.Errorf("projection %q: rebuild: %w", pr.name, err)
	}
	return end, nil
}
