package projection

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/eskit/eskit/eventstore"
)

// RetryResult reports what RetryParked did.
type RetryResult struct {
	// Applied is the number of parked records applied and removed.
	Applied int
	// Remaining is the number of records still parked in the streams that
	// were retried.
	Remaining int
}

// partsFor returns the partitions of pr that hold the given streams (all
// partitions when none are given), and fails with ErrNotActive when this
// runner does not hold one of them.
func (pr *proj) partsFor(streams []string) ([]*part, error) {
	var out []*part
	for _, pt := range pr.parts {
		if len(streams) > 0 && !slices.ContainsFunc(streams, func(s string) bool {
			return eventstore.StreamPartition(s, pr.partitions) == pt.idx
		}) {
			continue
		}
		out = append(out, pt)
	}
	for _, pt := range out {
		pt.vmu.Lock()
		active := pt.active
		pt.vmu.Unlock()
		if !active {
			return nil, fmt.Errorf("%w: %q partition %d", ErrNotActive, pr.name, pt.idx)
		}
	}
	return out, nil
}

// RetryParked applies the parked records of the given streams (all streams
// when none are given) again, each stream's in feed order, one transaction
// per partition. A stream stops at its first record that still fails (it
// and the records behind it stay parked, with the new error); a stream
// whose parked records all apply is unblocked. The runner must hold the
// partitions of those streams (all partitions when none are given).
func (r *Runner) RetryParked(ctx context.Context, name string, streams ...string) (RetryResult, error) {
	pr, err := r.proj(name)
	if err != nil {
		return RetryResult{}, err
	}
	parts, err := pr.partsFor(streams)
	if err != nil {
		return RetryResult{}, err
	}
	var res RetryResult
	for _, pt := range parts {
		got, err := r.retryPartition(ctx, pt, streams)
		res.Applied += got.Applied
		res.Remaining += got.Remaining
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

func (r *Runner) retryPartition(ctx context.Context, pt *part, streams []string) (RetryResult, error) {
	pr := pt.pr
	pt.mu.Lock()
	defer pt.mu.Unlock()
	st, _, err := pt.activeState()
	if err != nil {
		return RetryResult{}, err
	}
	list, err := r.be.readParked(ctx, pr.name, pt.idx, st.ns.Version)
	if err != nil {
		return RetryResult{}, err
	}
	var order []string
	byStream := make(map[string][]ParkedRecord)
	for _, p := range list {
		s := p.Record.StreamID
		if len(streams) > 0 && !slices.Contains(streams, s) {
			continue
		}
		if _, ok := byStream[s]; !ok {
			order = append(order, s)
		}
		byStream[s] = append(byStream[s], p)
	}
	if len(order) == 0 {
		return RetryResult{}, nil
	}
	tx, err := r.be.begin(ctx, pt, []*nsState{st}, true)
	if err != nil {
		return RetryResult{}, err
	}
	var (
		res   RetryResult
		after []func(context.Context)
		now   = time.Now().UTC()
		b     = tx.batch(0)
	)
	for _, s := range order {
		recs := byStream[s]
		for i, p := range recs {
			b.replay = st.isReplay(p.Record)
			_, attempts, err := r.applyOne(ctx, pr, tx, 0, b, p.Record)
			var terr *targetError
			if errors.As(err, &terr) {
				tx.rollback(ctx)
				return RetryResult{}, terr.err
			}
			if err != nil {
				if ctx.Err() != nil {
					tx.rollback(ctx)
					return RetryResult{}, ctx.Err()
				}
				p.Attempts += attempts
				p.Error, p.ParkedAt, p.BlockedBy = err.Error(), now, uuid.UUID{}
				if err := tx.park(ctx, 0, p); err != nil {
					tx.rollback(ctx)
					return RetryResult{}, err
				}
				res.Remaining += len(recs) - i
				break
			}
			after = append(after, b.after...)
			b.after = b.after[:0]
			if err := tx.unpark(ctx, 0, []string{p.Record.ID.String()}); err != nil {
				tx.rollback(ctx)
				return RetryResult{}, err
			}
			res.Applied++
		}
	}
	if err := r.commitState(ctx, pt, tx, []*nsState{st}, []checkpoint{st.ckpt}); err != nil {
		return RetryResult{}, err
	}
	if err := r.reloadParked(ctx, pt, st); err != nil {
		return res, err
	}
	r.runAfter(ctx, pr, after)
	pt.log.Info("projection: retried parked records", "applied", res.Applied, "remaining", res.Remaining)
	return res, nil
}

// SkipParked drops the parked records with the given event IDs (all parked
// records when none are given) without applying them. A stream is unblocked
// once none of its records is parked. It returns the number dropped. The
// runner must hold every partition of the projection.
func (r *Runner) SkipParked(ctx context.Context, name string, ids ...uuid.UUID) (int, error) {
	pr, err := r.proj(name)
	if err != nil {
		return 0, err
	}
	parts, err := pr.partsFor(nil)
	if err != nil {
		return 0, err
	}
	total := 0
	for _, pt := range parts {
		n, err := r.skipPartition(ctx, pt, ids)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func (r *Runner) skipPartition(ctx context.Context, pt *part, ids []uuid.UUID) (int, error) {
	pr := pt.pr
	pt.mu.Lock()
	defer pt.mu.Unlock()
	st, _, err := pt.activeState()
	if err != nil {
		return 0, err
	}
	list, err := r.be.readParked(ctx, pr.name, pt.idx, st.ns.Version)
	if err != nil {
		return 0, err
	}
	var fields []string
	for _, p := range list {
		if len(ids) == 0 || slices.Contains(ids, p.Record.ID) {
			fields = append(fields, p.Record.ID.String())
		}
	}
	if len(fields) == 0 {
		return 0, nil
	}
	tx, err := r.be.begin(ctx, pt, []*nsState{st}, false)
	if err != nil {
		return 0, err
	}
	if err := tx.unpark(ctx, 0, fields); err != nil {
		tx.rollback(ctx)
		return 0, err
	}
	if err := r.commitState(ctx, pt, tx, []*nsState{st}, []checkpoint{st.ckpt}); err != nil {
		return 0, err
	}
	if err := r.reloadParked(ctx, pt, st); err != nil {
		return len(fields), err
	}
	pt.log.Info("projection: skipped parked records", "skipped", len(fields))
	return len(fields), nil
}

// reloadParked refreshes st's blocked streams from Redis. The caller holds
// pt.mu.
func (r *Runner) reloadParked(ctx context.Context, pt *part, st *nsState) error {
	list, err := r.be.readParked(ctx, pt.pr.name, pt.idx, st.ns.Version)
	if err != nil {
		return fmt.Errorf("projection %q: reload parked records: %w", pt.pr.name, err)
	}
	st.setParked(list)
	if st.serving {
		pt.publish(st)
	}
	return nil
}
