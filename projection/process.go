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
		owned   = make([]ownedCmds, 0, len(recs)) // the commands and side effects of each applied record
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
		owned = append(owned, ownedCmds{rec: rec, cmds: [2]int{len(cmds), len(cmds) + b.pipe.Len()}, after: [2]int{len(after), len(after) + len(b.after)}})
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
	partial, err := r.commitTx(ctx, pr, func(p redis.Pipeliner) redis.Cmder {
		_ = p.BatchProcess(ctx, cmds...)
		return writeCheckpoint(ctx, p, pr.k, st.ns.Version, next)
	})
	if err != nil {
		return err
	}
	if partial != nil {
		// The batch is committed, checkpoint included; the records whose
		// commands failed inside EXEC are parked now, and block their
		// streams from the next batch on.
		n, err := r.parkPartial(ctx, pr, st, cmds, owned, &after, &staged, now)
		if err != nil {
			return err
		}
		applied -= n
		parked += n
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

// ownedCmds locates one applied record's commands and side effects in its
// batch: half-open index ranges.
type ownedCmds struct {
	rec   eventstore.Record
	cmds  [2]int
	after [2]int
}

// parkPartial parks, after their batch committed, the records one of whose
// commands failed inside EXEC, drops their side effects and stages their
// streams as blocked. It returns how many it parked. The checkpoint is
// visible a moment before the parked records; a runner that dies in
// between leaves only the log line and the projection's last error.
func (r *Runner) parkPartial(ctx context.Context, pr *proj, st *nsState, cmds []redis.Cmder, owned []ownedCmds,
	after *[]func(context.Context), staged *map[string]eventstoreID, now time.Time) (int, error) {
	var parkCmds []redis.Cmder
	drop := map[int]bool{}
	for _, o := range owned {
		var failed redis.Cmder
		for _, c := range cmds[o.cmds[0]:o.cmds[1]] {
			if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
				failed = c
				break
			}
		}
		if failed == nil {
			continue
		}
		rec := o.rec
		reason := fmt.Sprintf("partially applied: command %q failed inside the batch's EXEC: %v; the record's other commands took effect",
			failed.Name(), failed.Err())
		r.log.Error("projection: parking a partially applied record", "projection", pr.name, "namespace", st.ns.String(),
			"stream", rec.StreamID, "version", rec.Version, "position", rec.Position.String(), "type", rec.Type, "err", failed.Err())
		r.recordError(pr, fmt.Errorf("parked %s v%d (position %s): %s", rec.StreamID, rec.Version, rec.Position, reason))
		cmd, err := parkCmd(ctx, pr.k, st.ns.Version, ParkedRecord{Record: rec, Error: reason, Attempts: 1, ParkedAt: now, Partial: true})
		if err != nil {
			return 0, err
		}
		parkCmds = append(parkCmds, cmd)
		for i := o.after[0]; i < o.after[1]; i++ {
			drop[i] = true
		}
		if _, ok := st.blocked[rec.StreamID]; !ok {
			if _, ok := (*staged)[rec.StreamID]; !ok {
				if *staged == nil {
					*staged = make(map[string]eventstoreID)
				}
				(*staged)[rec.StreamID] = rec.ID.String()
			}
		}
	}
	if len(parkCmds) == 0 {
		return 0, nil
	}
	if err := r.commit(ctx, pr, func(p redis.Pipeliner) redis.Cmder {
		_ = p.BatchProcess(ctx, parkCmds...)
		return parkCmds[len(parkCmds)-1]
	}); err != nil {
		return 0, fmt.Errorf("projection %q: park partially applied records: %w", pr.name, err)
	}
	kept := (*after)[:0]
	for i, fn := range *after {
		if !drop[i] {
			kept = append(kept, fn)
		}
	}
	*after = kept
	return len(parkCmds), nil
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
	partial, err := r.commitTx(ctx, pr, fill)
	if partial != nil {
		r.log.Error("projection: command failed inside a committed batch", "projection", pr.name, "err", partial)
		r.recordError(pr, partial)
	}
	return err
}

// commitTx is commit without the handling of commands that failed inside
// EXEC: partial, when set, reports them (the commit took place).
func (r *Runner) commitTx(ctx context.Context, pr *proj, fill func(p redis.Pipeliner) redis.Cmder) (partial, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	pr.leaseMu.RLock()
	defer pr.leaseMu.RUnlock()
	lease := pr.k.lease()
	var marker redis.Cmder
	err = r.rdb.Watch(ctx, func(tx *redis.Tx) error {
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
		return nil, nil
	case errors.Is(err, redis.TxFailedErr):
		return nil, fmt.Errorf("%w: lease of %q changed during commit", ErrLeaseLost, pr.name)
	case errors.Is(err, ErrLeaseLost):
		return nil, err
	case marker != nil && marker.Err() == nil:
		return fmt.Errorf("projection %q: a command of the committed batch failed: %w", pr.name, err), nil
	default:
		return nil, fmt.Errorf("projection %q: commit: %w", pr.name, err)
	}
}
