package projection

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/lease"
	"github.com/eskit/eskit/lease/redislease"
)

// checkpoint is a partition's progress in one namespace, stored in its
// ckpt hash and committed with every batch.
type checkpoint struct {
	// pos is the highest position applied (live or from the feed); WaitFor
	// compares with it.
	pos eventstore.Position
	// verified is the position up to which the store's feed has been read:
	// every record of the partition at or before it is applied (or
	// parked). Catch-up resumes from it.
	verified eventstore.Position
	// seq counts the commits; every commit requires the stored seq to be
	// the one this runner committed last.
	seq    int64
	lastAt time.Time // RecordedAt of the last applied record
	ready  bool      // the namespace's history is applied (first build or rebuild)
	exists bool      // the hash exists
}

func parseCheckpoint(name string, vals map[string]string) (checkpoint, error) {
	var c checkpoint
	if len(vals) == 0 {
		return c, nil
	}
	c.exists = true
	var err error
	if s := vals["pos"]; s != "" {
		if c.pos, err = eventstore.ParsePosition(s); err != nil {
			return c, fmt.Errorf("projection %q: checkpoint: %w", name, err)
		}
	}
	if s := vals["verified"]; s != "" {
		if c.verified, err = eventstore.ParsePosition(s); err != nil {
			return c, fmt.Errorf("projection %q: checkpoint: %w", name, err)
		}
	}
	if s := vals["seq"]; s != "" {
		if c.seq, err = strconv.ParseInt(s, 10, 64); err != nil {
			return c, fmt.Errorf("projection %q: checkpoint seq %q: %w", name, s, err)
		}
	}
	if s := vals["at"]; s != "" {
		ns, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return c, fmt.Errorf("projection %q: checkpoint time %q: %w", name, s, err)
		}
		c.lastAt = time.Unix(0, ns).UTC()
	}
	c.ready = vals[readyField] == "1"
	return c, nil
}

// fields returns the checkpoint as HSET arguments.
func (c checkpoint) fields() []any {
	at := ""
	if !c.lastAt.IsZero() {
		at = strconv.FormatInt(c.lastAt.UnixNano(), 10)
	}
	ready := "0"
	if c.ready {
		ready = "1"
	}
	return []any{"pos", c.pos.String(), "verified", c.verified.String(), "seq", strconv.FormatInt(c.seq, 10), "at", at, readyField, ready}
}

// commitState commits fill's commands and the targets' new checkpoints
// (see commitTx); a command failing inside EXEC is logged and recorded as
// the projection's last error, and the commit counts as done.
func (r *Runner) commitState(ctx context.Context, pt *part, sts []*nsState, nexts []checkpoint, fill func(p redis.Pipeliner)) error {
	partial, err := r.commitTx(ctx, pt, sts, nexts, fill)
	if partial != nil {
		pt.log.Error("projection: command failed inside a committed batch", "err", partial)
		r.recordError(pt.pr, partial)
	}
	if err == nil {
		for i, st := range sts {
			st.ckpt = nexts[i]
			st.ckpt.seq++
			st.ckpt.exists = true
		}
	}
	return err
}

// commitTx runs fill's commands and writes each target's next checkpoint
// (with the commit counter advanced) in one MULTI/EXEC. It runs under WATCH
// of the partition's lease and of the targets' checkpoints, and only while
// this runner owns the lease and every stored checkpoint's commit counter
// is the one this runner committed last: a deposed runner cannot commit,
// and a runner whose Redis went back in time (a failover to a lagging
// replica, a restore, a flush) gets errStale instead of writing over what
// is there. partial, when set, reports commands that failed inside EXEC
// (the commit took place). The caller updates the targets' state.
func (r *Runner) commitTx(ctx context.Context, pt *part, sts []*nsState, nexts []checkpoint, fill func(p redis.Pipeliner)) (partial, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	pr := pt.pr
	h := pt.held
	if h == nil {
		return nil, leaseLost(pt, errors.New("no session holds the lease"))
	}
	if err := h.Err(); err != nil {
		// Past the lease's own deadline (a runner waking from a freeze
		// learns it here, before talking to Redis).
		return nil, leaseLost(pt, err)
	}
	held := h.Lease()
	pt.leaseMu.RLock()
	defer pt.leaseMu.RUnlock()
	watched := []string{r.leases.Key(held.Name)}
	for _, st := range sts {
		watched = append(watched, pr.k.checkpoint(pt.idx, st.ns.Version))
	}
	var marker redis.Cmder
	err = r.watch(ctx, watched, func(tx *redis.Tx, watch func(p redis.Pipeliner) *redis.Cmd) error {
		var fence *redislease.WatchCheck
		var watchCmd *redis.Cmd
		seqs := make([]*redis.StringCmd, len(sts))
		if _, err := tx.Pipelined(ctx, func(p redis.Pipeliner) error {
			watchCmd = watch(p)
			fence = r.leases.Check(ctx, p, held)
			for i := range sts {
				seqs[i] = p.HGet(ctx, watched[i+1], "seq")
			}
			return nil
		}); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		if watchCmd != nil && watchCmd.Err() != nil {
			return watchCmd.Err()
		}
		if err := fence.Err(); err != nil {
			if errors.Is(err, lease.ErrFenced) {
				return leaseLost(pt, err)
			}
			return err
		}
		for i, st := range sts {
			stored, err := seqs[i].Result()
			if errors.Is(err, redis.Nil) {
				stored = ""
			} else if err != nil {
				return err
			}
			want := ""
			if st.ckpt.exists {
				want = strconv.FormatInt(st.ckpt.seq, 10)
			}
			if stored != want {
				if st.ckpt.exists {
					return fmt.Errorf("%w: checkpoint of %s is at commit %q, this runner committed %q", errStale, st.ns, stored, want)
				}
				return fmt.Errorf("%w: checkpoint of %s appeared (commit %q)", errStale, st.ns, stored)
			}
		}
		_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			if fill != nil {
				fill(p)
			}
			for i, st := range sts {
				c := nexts[i]
				c.seq = st.ckpt.seq + 1
				marker = p.HSet(ctx, watched[i+1], c.fields()...)
			}
			return nil
		})
		return err
	})
	switch {
	case err == nil:
		return nil, nil
	case errors.Is(err, redis.TxFailedErr):
		// A watched key changed: the lease was taken or a checkpoint was
		// written by someone else. Either way, what is stored is not what
		// this runner expects.
		return nil, fmt.Errorf("%w: %q partition %d: a watched key changed during commit", errStale, pr.name, pt.idx)
	case errors.Is(err, ErrLeaseLost), errors.Is(err, errStale):
		return nil, err
	case marker != nil && marker.Err() == nil:
		return fmt.Errorf("projection %q: a command of the committed batch failed: %w", pr.name, err), nil
	default:
		return nil, fmt.Errorf("projection %q: commit: %w", pr.name, err)
	}
}

// watch runs fn in a transaction that watches keys. fn sends the WATCH
// itself, with watch, in the pipeline of its first reads: on a single
// server that saves the round trip of a WATCH of its own (a Redis Cluster
// client sends it first, as it routes the transaction by the keys; watch
// then queues nothing and returns nil). When fn fails before its EXEC ran,
// the keys are unwatched, so that the connection goes back to the pool
// without them.
func (r *Runner) watch(ctx context.Context, keys []string, fn func(tx *redis.Tx, watch func(p redis.Pipeliner) *redis.Cmd) error) error {
	c, single := r.rdb.(*redis.Client)
	if !single {
		return r.rdb.Watch(ctx, func(tx *redis.Tx) error {
			return fn(tx, func(redis.Pipeliner) *redis.Cmd { return nil })
		}, keys...)
	}
	args := make([]any, 0, 1+len(keys))
	args = append(args, "watch")
	for _, k := range keys {
		args = append(args, k)
	}
	return c.Watch(ctx, func(tx *redis.Tx) error {
		err := fn(tx, func(p redis.Pipeliner) *redis.Cmd { return p.Do(ctx, args...) })
		if err != nil && !errors.Is(err, redis.TxFailedErr) {
			// EXEC, which unwatches, may not have run. Unwatch even when
			// ctx has ended: the connection goes back to the pool.
			uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_ = tx.Unwatch(uctx).Err()
			cancel()
		}
		return err
	})
}
