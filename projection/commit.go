package projection

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/eskit/eskit/eventstore"
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

// commit commits tx with each target's next checkpoint (see txn.commit)
// and makes them the targets' checkpoints; the records whose writes
// failed inside a commit that took place are returned (Redis), the
// caller parks them.
func (r *Runner) commit(ctx context.Context, tx txn, sts []*nsState, nexts []checkpoint) ([]failedWrite, error) {
	if hook := r.cfg.beforeCommit; hook != nil {
		hook(ctx, tx.projection())
	}
	failed, err := tx.commit(ctx, nexts)
	if err != nil {
		return nil, err
	}
	for i, st := range sts {
		st.ckpt = nexts[i]
		st.ckpt.seq++
		st.ckpt.exists = true
	}
	return failed, nil
}

// commitState commits tx (see commit); a write failing inside a commit
// that took place is logged and recorded as the projection's last error,
// and the commit counts as done.
func (r *Runner) commitState(ctx context.Context, pt *part, tx txn, sts []*nsState, nexts []checkpoint) error {
	failed, err := tx.commit(ctx, nexts)
	if err != nil {
		return err
	}
	for _, f := range failed {
		pt.log.Error("projection: a write failed inside a committed batch", "err", f.err)
		r.recordError(pt.pr, f.err)
	}
	for i, st := range sts {
		st.ckpt = nexts[i]
		st.ckpt.seq++
		st.ckpt.exists = true
	}
	return nil
}
