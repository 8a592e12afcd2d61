package projection

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// RetryResult reports what RetryParked did.
type RetryResult struct {
	// Applied is the number of parked records applied and removed.
	Applied int
	// Remaining is the number of records still parked in the streams that
	// were retried.
	Remaining int
}

// RetryParked applies the parked records of the given streams (all streams
// when none are given) again, each stream's in feed order, in one
// transaction. A stream stops at its first record that still fails (it and
// the records behind it stay parked, with the new error); a stream whose
// parked records all apply is unblocked. The runner must be the
// projection's active runner.
func (r *Runner) RetryParked(ctx context.Context, name string, streams ...string) (RetryResult, error) {
	pr, err := r.proj(name)
	if err != nil {
		return RetryResult{}, err
	}
	pr.mu.Lock()
	defer pr.mu.Unlock()
	st, _, err := pr.activeState()
	if err != nil {
		return RetryResult{}, err
	}
	list, err := readParked(ctx, r.rdb, pr.k, st.ns.Version)
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
	var (
		res   RetryResult
		cmds  []redis.Cmder
		after []func(context.Context)
		now   = time.Now().UTC()
		b     = &Batch{pipe: r.rdb.Pipeline(), reader: r.rdb, ns: st.ns, replay: st.replay}
	)
	for _, s := range order {
		recs := byStream[s]
		for i, p := range recs {
			attempts, err := r.applyOne(ctx, pr, b, p.Record)
			if err != nil {
				if ctx.Err() != nil {
					return RetryResult{}, ctx.Err()
				}
				p.Attempts += attempts
				p.Error, p.ParkedAt, p.BlockedBy = err.Error(), now, uuid.UUID{}
				cmd, perr := parkCmd(ctx, pr.k, st.ns.Version, p)
				if perr != nil {
					return RetryResult{}, perr
				}
				cmds = append(cmds, cmd)
				res.Remaining += len(recs) - i
				break
			}
			cmds = append(cmds, b.pipe.Cmds()...)
			b.pipe.Discard()
			after = append(after, b.after...)
			b.after = b.after[:0]
			cmds = append(cmds, redis.NewIntCmd(ctx, "hdel", pr.k.parked(st.ns.Version), p.Record.ID.String()))
			res.Applied++
		}
	}
	if err := r.commit(ctx, pr, func(p redis.Pipeliner) redis.Cmder {
		_ = p.BatchProcess(ctx, cmds...)
		return writeCheckpoint(ctx, p, pr.k, st.ns.Version, st.ckpt)
	}); err != nil {
		return RetryResult{}, err
	}
	if err := r.reloadParked(ctx, pr, st); err != nil {
		return res, err
	}
	r.runAfter(ctx, pr, after)
	r.log.Info("projection: retried parked records", "projection", name, "applied", res.Applied, "remaining", res.Remaining)
	return res, nil
}

// SkipParked drops the parked records with the given event IDs (all parked
// records when none are given) without applying them. A stream is unblocked
// once none of its records is parked. It returns the number dropped. The
// runner must be the projection's active runner.
func (r *Runner) SkipParked(ctx context.Context, name string, ids ...uuid.UUID) (int, error) {
	pr, err := r.proj(name)
	if err != nil {
		return 0, err
	}
	pr.mu.Lock()
	defer pr.mu.Unlock()
	st, _, err := pr.activeState()
	if err != nil {
		return 0, err
	}
	list, err := readParked(ctx, r.rdb, pr.k, st.ns.Version)
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
	if err := r.commit(ctx, pr, func(p redis.Pipeliner) redis.Cmder {
		return p.HDel(ctx, pr.k.parked(st.ns.Version), fields...)
	}); err != nil {
		return 0, err
	}
	if err := r.reloadParked(ctx, pr, st); err != nil {
		return len(fields), err
	}
	r.log.Info("projection: skipped parked records", "projection", name, "skipped", len(fields))
	return len(fields), nil
}

// reloadParked refreshes st's blocked streams from Redis. The caller holds
// pr.mu.
func (r *Runner) reloadParked(ctx context.Context, pr *proj, st *nsState) error {
	list, err := readParked(ctx, r.rdb, pr.k, st.ns.Version)
	if err != nil {
		return fmt.Errorf("projection %q: reload parked records: %w", pr.name, err)
	}
	st.setParked(list)
	if st.serving {
		pr.publish(st)
	}
	return nil
}
