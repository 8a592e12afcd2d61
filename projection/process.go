package projection

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/internal/backoff"
)

// applyBatch applies recs (in feed order) to namespace st and commits the
// writes with the new checkpoint in one MULTI/EXEC under the lease. Records
// at or below the checkpoint are skipped; a record that keeps failing is
// parked, and so are later records of its stream. On error nothing of the
// batch is kept in st (the caller restarts from Redis).
func (r *Runner) applyBatch(ctx context.Context, pr *proj, st *nsState, recs []eventstore.Record) error {
	b := &Batch{pipe: r.rdb.Pipeline(), reader: r.rdb, ns: st.ns, replay: st.replay}
	var (
		cmds    = make([]redis.Cmder, 0, 2*len(recs))
		after   []func(context.Context)
		next    = st.ckpt
		staged  map[string]eventstoreID // streams newly blocked by this batch
		parked  int
		applied int
		now     = time.Now().UTC()
	)
	blockedBy := func(stream string) (eventstoreID, bool) {
		if id, ok := st.blocked[stream]; ok {
			return id, true
		}
		id, ok := staged[stream]
		return id, ok
	}
	for _, rec := range recs {
		if !rec.Position.After(next.pos) {
			continue
		}
		next = checkpoint{pos: rec.Position, lastAt: rec.RecordedAt}
		if first, ok := blockedBy(rec.StreamID); ok {
			firstID, _ := uuid.Parse(first)
			cmd, err := parkCmd(ctx, pr.k, st.ns.Version, ParkedRecord{
				Record: rec, Error: "waiting behind parked record " + first, ParkedAt: now, BlockedBy: firstID,
			})
			if err != nil {
				return err
			}
			cmds = append(cmds, cmd)
			parked++
			continue
		}
		attempts, err := r.applyTraced(ctx, pr, b, rec)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.log.Warn("projection: parking record", "projection", pr.name, "namespace", st.ns.String(),
				"stream", rec.StreamID, "version", rec.Version, "position", rec.Position.String(),
				"type", rec.Type, "attempts", attempts, "err", err)
			r.recordError(pr, fmt.Errorf("parked %s v%d (position %s) after %d attempts: %w",
				rec.StreamID, rec.Version, rec.Position, attempts, err))
			cmd, perr := parkCmd(ctx, pr.k, st.ns.Version, ParkedRecord{
				Record: rec, Error: err.Error(), Attempts: attempts, ParkedAt: now,
			})
			if perr != nil {
				return perr
			}
			cmds = append(cmds, cmd)
			if staged == nil {
				staged = make(map[string]eventstoreID)
			}
			staged[rec.StreamID] = rec.ID.String()
			parked++
			continue
		}
		cmds = append(cmds, b.pipe.Cmds()...)
		b.pipe.Discard()
		after = append(after, b.after...)
		b.after = b.after[:0]
		applied++
	}
	if next == st.ckpt {
		return nil
	}
	if hook := r.cfg.beforeCommit; hook != nil {
		hook(ctx, pr.name)
	}
	if err := r.commit(ctx, pr, func(p redis.Pipeliner) redis.Cmder {
		_ = p.BatchProcess(ctx, cmds...)
		return writeCheckpoint(ctx, p, pr.k, st.ns.Version, next)
	}); err != nil {
		return err
	}
	r.tel.committed(ctx, pr.name, applied, parked)
	st.ckpt = next
	for stream, id := range staged {
		st.blocked[stream] = id
	}
	st.parked += parked
	if st.serving {
		pr.publish(st)
	}
	r.runAfter(ctx, pr, after)
	return nil
}

// runAfter runs the side effects of a committed batch; a panicking one is
// logged and recorded, and the others still run.
func (r *Runner) runAfter(ctx context.Context, pr *proj, fns []func(context.Context)) {
	for _, fn := range fns {
		func() {
			defer func() {
				if v := recover(); v != nil {
					err := fmt.Errorf("side effect panicked: %v", v)
					r.log.Error("projection: side effect", "projection", pr.name, "err", err)
					r.recordError(pr, err)
				}
			}()
			fn(ctx)
		}()
	}
}

// applyOne applies one record, retrying with backoff; it returns the
// number of attempts made. A failed attempt's queued commands are dropped.
func (r *Runner) applyOne(ctx context.Context, pr *proj, b *Batch, rec eventstore.Record) (int, error) {
	delay := r.cfg.minBackoff
	for attempt := 1; ; attempt++ {
		err := safeApply(ctx, pr.p, b, rec)
		if err == nil {
			return attempt, nil
		}
		b.pipe.Discard()
		b.after = b.after[:0]
		if IsPermanent(err) || attempt >= r.cfg.attempts || ctx.Err() != nil {
			return attempt, err
		}
		if serr := backoff.Sleep(ctx, delay); serr != nil {
			return attempt, err
		}
		delay = min(delay*2, r.cfg.maxBackoff)
	}
}

// safeApply calls Apply, turning a panic into an error.
func safeApply(ctx context.Context, p Projection, b *Batch, rec eventstore.Record) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("projection %q: apply panicked: %v", p.Name(), v)
		}
	}()
	return p.Apply(ctx, b, rec)
}

// parkCmd returns the command that stores a parked record.
func parkCmd(ctx context.Context, k keys, v int64, p ParkedRecord) (redis.Cmder, error) {
	data, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("projection %q: encode parked record: %w", k.name, err)
	}
	return redis.NewIntCmd(ctx, "hset", k.parked(v), p.Record.ID.String(), data), nil
}

// commit runs the commands fill queues in one MULTI/EXEC, under WATCH of
// the lease key and only while this runner owns the lease. fill returns the
// command whose success proves that EXEC ran (the checkpoint write). A
// command of the transaction that fails inside EXEC does not undo the
// others (Redis has no rollback): it is logged and recorded as the
// projection's last error, and the commit counts as done.
func (r *Runner) commit(ctx context.Context, pr *proj, fill func(p redis.Pipeliner) redis.Cmder) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	pr.leaseMu.RLock()
	defer pr.leaseMu.RUnlock()
	lease := pr.k.lease()
	var marker redis.Cmder
	err := r.rdb.Watch(ctx, func(tx *redis.Tx) error {
		owner, err := tx.Get(ctx, lease).Result()
		switch {
		case errors.Is(err, redis.Nil):
			return fmt.Errorf("%w: lease of %q expired", ErrLeaseLost, pr.name)
		case err != nil:
			return err
		case owner != r.token:
			return fmt.Errorf("%w: lease of %q is held by %s", ErrLeaseLost, pr.name, owner)
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			marker = fill(p)
			return nil
		})
		return err
	}, lease)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, redis.TxFailedErr):
		return fmt.Errorf("%w: lease of %q changed during commit", ErrLeaseLost, pr.name)
	case errors.Is(err, ErrLeaseLost):
		return err
	case marker != nil && marker.Err() == nil:
		err = fmt.Errorf("projection %q: a command of the committed batch failed: %w", pr.name, err)
		r.log.Error("projection: command failed inside a committed batch", "projection", pr.name, "err", err)
		r.recordError(pr, err)
		return nil
	default:
		return fmt.Errorf("projection %q: commit: %w", pr.name, err)
	}
}
