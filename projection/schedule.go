package projection

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/lease"
)

// errRebalance ends a session whose partition the runner hands to another
// runner.
var errRebalance = errors.New("projection: partition handed over to balance the runners")

// balanceEvery is the longest pause between two rounds of balancing.
const balanceEvery = 250 * time.Millisecond

// schedule keeps the runner's share of the partitions until ctx ends. Every
// renew interval (at most balanceEvery) it refreshes its presence in each projection's runner set,
// computes its fair share (the sum over its projections of partitions
// divided by that projection's live runners, rounded up), takes free
// partitions while below it, and hands back partitions while above it.
// Partitions are tried from an offset derived from the owner token, so
// runners starting together spread instead of all taking partition 0 of
// every projection. A free partition nobody took for a whole lease TTL is
// taken whatever the share, so every partition is always applied.
func (r *Runner) schedule(ctx context.Context) {
	every := min(r.cfg.renewEvery, balanceEvery)
	t := time.NewTicker(every)
	defer t.Stop()
	offset := int(fnv32(r.token))
	// Announce this runner and let runners starting at the same time do
	// the same, so the first round already shares the partitions instead
	// of one runner taking them all and handing them back. A share of one
	// partition cannot shrink (every runner may hold one), so then there
	// is nothing to wait for.
	if counts, err := r.presence(ctx); err == nil && r.fairShare(counts) > 1 {
		_ = backoff.Sleep(ctx, every)
	}
	for {
		r.balance(ctx, offset)
		select {
		case <-ctx.Done():
			for _, pr := range r.order {
				for _, pt := range pr.parts {
					if pt.done != nil {
						<-pt.done
					}
				}
			}
			r.leave()
			return
		case <-t.C:
		}
	}
}

// leave removes the runner from the runner sets, so the others rebalance
// at once instead of after the presence expires.
func (r *Runner) leave() {
	if r.cfg.keepLease {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = r.be.leave(ctx, r.token, r.names())
}

// presence records the runner in every projection's runner set and
// returns how many live runners each has.
func (r *Runner) presence(ctx context.Context) ([]int, error) {
	return r.be.presence(ctx, r.token, r.names(), r.cfg.leaseTTL)
}

// names returns the names of the runner's projections, in r.order.
func (r *Runner) names() []string {
	names := make([]string, len(r.order))
	for i, pr := range r.order {
		names[i] = pr.name
	}
	return names
}

// fairShare is how many partitions the runner should hold: the sum over
// its projections of partitions divided by that projection's live runners
// (counts, in r.order), rounded up.
func (r *Runner) fairShare(counts []int) int {
	share := 0.0
	for i, pr := range r.order {
		share += float64(pr.partitions) / float64(counts[i])
	}
	return int(math.Ceil(share - 1e-9))
}

// balance is one round of schedule.
func (r *Runner) balance(ctx context.Context, offset int) {
	if ctx.Err() != nil {
		return
	}
	held := 0
	for _, pr := range r.order {
		for _, pt := range pr.parts {
			if pt.done != nil {
				select {
				case <-pt.done:
					pt.done, pt.stop = nil, nil
					pt.sessionEnded(r.cfg.backoff, time.Now())
				default:
					if !pt.handover.Load() {
						held++
					} else if time.Since(pt.handoverAt) > r.cfg.leaseTTL {
						// The session did not reach the end of its batch in
						// time: stop it (the batch is not committed).
						pt.stop(errRebalance)
					}
				}
			}
		}
	}
	counts, err := r.presence(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("projection: record presence", "err", err)
		}
		counts = make([]int, len(r.order))
		for i := range counts {
			counts[i] = 1
		}
	}
	fair := r.fairShare(counts)

	// Free partitions, tried in the runner's own order; a partition whose
	// sessions keep failing waits for its backoff first.
	var candidates []*part
	start := time.Now()
	for _, pr := range r.order {
		for i := range pr.partitions {
			pt := pr.parts[(i+offset)%pr.partitions]
			if pt.done == nil && !start.Before(pt.retryAt) {
				candidates = append(candidates, pt)
			}
		}
	}
	// The live leases of the candidates, one read per projection.
	taken := make([]bool, len(candidates))
	byProj := map[*proj][]int{}
	for i, pt := range candidates {
		byProj[pt.pr] = append(byProj[pt.pr], i)
	}
	for pr, idx := range byProj {
		ps := make([]int, len(idx))
		for j, i := range idx {
			ps[j] = candidates[i].idx
		}
		owners, err := r.be.currentLeases(ctx, pr.name, ps)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("projection: read leases", "err", err)
			}
			return
		}
		for j, i := range idx {
			taken[i] = owners[j].ok
		}
	}
	now := time.Now()
	for i, pt := range candidates {
		if taken[i] {
			pt.freeFor = time.Time{}
			continue // held by another runner (or by an earlier session of this one, until it expires)
		}
		if pt.freeFor.IsZero() {
			pt.freeFor = now
		}
		if held >= fair && now.Sub(pt.freeFor) < r.cfg.leaseTTL {
			continue // our share is full; leave it to a runner below its share
		}
		h, err := pt.keeper.TryHold(context.WithoutCancel(ctx))
		if errors.Is(err, lease.ErrHeld) {
			pt.freeFor = time.Time{}
			continue // another runner took it first
		}
		if err != nil {
			if ctx.Err() == nil {
				r.recordError(pt.pr, fmt.Errorf("partition %d: take lease: %w", pt.idx, err))
				pt.log.Warn("projection: take lease", "err", err)
			}
			continue
		}
		pt.held = h
		pt.freeFor = time.Time{}
		held++
		r.startSession(ctx, pt)
	}
	// Above the share: hand back what exceeds it, last partitions first.
	for i := len(r.order) - 1; i >= 0 && held > fair; i-- {
		pr := r.order[i]
		for j := pr.partitions - 1; j >= 0 && held > fair; j-- {
			pt := pr.parts[j]
			if pt.stop != nil && !pt.handover.Load() {
				// The session ends after its current batch (maintain).
				pt.log.Info("projection: handing partition over", "held", held, "share", fair)
				pt.handoverAt = time.Now()
				pt.handover.Store(true)
				held--
			}
		}
	}
}

// startSession runs a session of a partition whose lease the runner took.
func (r *Runner) startSession(ctx context.Context, pt *part) {
	sctx, cancel := context.WithCancelCause(ctx)
	pt.stop, pt.done = cancel, make(chan struct{})
	pt.handover.Store(false)
	pt.failed, pt.caughtUp = false, false
	done := pt.done
	go func() {
		defer close(done)
		defer cancel(nil)
		r.session(sctx, pt)
	}()
}
