package projection

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/eskit/eskit/eventstore"
)

// metaPoll is how often a session reads its projection's meta (first build
// completion, rebuilds, switches).
const metaPoll = 100 * time.Millisecond

// session is one period of holding a partition's lease (pt.held, which
// its Keeper renews in the background): it serves the partition until ctx
// ends, the lease is lost, the scheduler hands the partition over or
// serving fails, then gives the lease back.
func (r *Runner) session(ctx context.Context, pt *part) {
	log := pt.log
	h := pt.held
	log.Info("projection partition active", "owner", r.token, "token", h.Token())
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopWatching := watchLostLease(pt, h, cancel)
	controlled := make(chan struct{})
	go func() {
		defer close(controlled)
		r.controlLoop(sctx, pt)
	}()
	var err error
	for {
		err = r.serve(sctx, pt)
		pt.rememberCommitted()
		if !errors.Is(err, errStale) || sctx.Err() != nil {
			break
		}
		// Redis holds something else than what this runner committed last
		// (rolled back, flushed, restored, or written by someone else):
		// reload what is really there and re-apply from the store.
		log.Warn("projection: stored state changed under the runner; reloading from Redis", "err", err)
		r.recordError(pt.pr, fmt.Errorf("partition %d: %w", pt.idx, err))
		pt.deactivate()
	}
	stopWatching()
	cancel(nil)
	<-controlled
	pt.deactivate()
	cause := context.Cause(sctx)
	switch {
	case errors.Is(cause, ErrLeaseLost) || errors.Is(err, ErrLeaseLost):
		if errors.Is(cause, ErrLeaseLost) {
			err = cause
		}
		log.Warn("projection lease lost", "err", err)
		r.recordError(pt.pr, fmt.Errorf("partition %d: %w", pt.idx, err))
	case errors.Is(err, errRebalance), errors.Is(context.Cause(ctx), errRebalance):
		log.Info("projection partition handed over")
	case ctx.Err() != nil:
	case err != nil:
		pt.failed = true
		r.recordError(pt.pr, fmt.Errorf("partition %d: %w", pt.idx, err))
		log.Error("projection session failed; restarting", "err", err)
	}
	// Nothing writes the partition any more: give the lease back (when it
	// is already lost, this only stops its renewals).
	r.release(ctx, pt, h)
}

// serve loads the partition's serving namespace, catches up from the
// store, then follows live events (from JetStream, or the store's feed),
// between batches keeping up with the projection's meta.
func (r *Runner) serve(ctx context.Context, pt *part) error {
	var live *liveSide
	if r.cfg.js != nil {
		// The consumer exists before the catch-up starts, so every event
		// published after the catch-up's last read reaches it.
		var err error
		if live, err = r.openLive(ctx, pt); err != nil {
			return err
		}
		defer live.stop()
	}
	started := time.Now()
	st, err := r.load(ctx, pt)
	if err != nil {
		return err
	}
	pt.activate(ctx, st)
	m := maintenance{}
	prog := newProgress(pt.log, "projection catching up from the store", st.ckpt.verified)
	for {
		pt.mu.Lock()
		more, err := r.catchUpPage(ctx, pt, true)
		pos := pt.cur.ckpt.verified
		pt.mu.Unlock()
		if err != nil {
			return ignoreCancel(ctx, err)
		}
		if !more {
			prog.done(pos)
			break
		}
		if pt.handover.Load() {
			return errRebalance
		}
		prog.step(ctx, r.src, pos)
	}
	if err := r.maintain(ctx, pt, &m, true); err != nil {
		return ignoreCancel(ctx, err)
	}
	pt.mu.Lock()
	healthy := pt.cur != nil && pt.cur.parked == 0
	pt.mu.Unlock()
	if healthy {
		r.clearErrorBefore(ctx, pt.pr, started)
	}
	pt.caughtUp = true
	pt.following.Store(true)
	if live != nil {
		return ignoreCancel(ctx, r.runLive(ctx, pt, live, &m))
	}
	return ignoreCancel(ctx, r.follow(ctx, pt, &m))
}

// ignoreCancel drops the error a cancelled session's operations return.
func ignoreCancel(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		return nil
	}
	return err
}

// catchUpPage applies the next page of the feed after the serving
// namespace's verified position; it reports whether the page was full
// (more may follow). With ahead, a full page makes the next one be read
// meanwhile (see readFeed). The caller holds pt.mu.
func (r *Runner) catchUpPage(ctx context.Context, pt *part, ahead bool) (bool, error) {
	st := pt.cur
	recs, err := r.readFeed(ctx, pt, st.ckpt.verified, ahead)
	if err != nil {
		return false, fmt.Errorf("projection %q: read feed: %w", pt.pr.name, err)
	}
	if len(recs) == 0 {
		return false, nil
	}
	if err := r.applyBatch(ctx, pt, pt.targets(), pt.mine(recs), recs[len(recs)-1].Position); err != nil {
		return false, err
	}
	return len(recs) == r.cfg.batchSize, nil
}

// follow tails the store's feed (when no broker is configured).
func (r *Runner) follow(ctx context.Context, pt *part, m *maintenance) error {
	for {
		pt.mu.Lock()
		more, err := r.catchUpPage(ctx, pt, true)
		pos := pt.cur.ckpt.verified
		pt.mu.Unlock()
		if err != nil {
			return err
		}
		if err := r.maintain(ctx, pt, m, false); err != nil {
			return err
		}
		if more || m.busy {
			continue
		}
		wait := min(r.cfg.poll, metaPoll)
		wctx, cancel := context.WithTimeout(ctx, wait)
		if r.cfg.wait != nil {
			// A poke ends the wait as well.
			go func() {
				select {
				case <-pt.kick:
					cancel()
				case <-wctx.Done():
				}
			}()
			_ = r.cfg.wait(wctx, pos)
		} else {
			select {
			case <-wctx.Done():
			case <-pt.kick:
			}
		}
		cancel()
		if ctx.Err() != nil {
			return nil
		}
	}
}

// readFeed reads the page of the feed after pos through the runner's page
// cache, where the partitions of a partitioned projection share pages.
// With ahead, a full page starts the read of the next one in the
// background, so that reading the feed overlaps applying what was read
// (catch-up, rebuilds).
func (r *Runner) readFeed(ctx context.Context, pt *part, pos eventstore.Position, ahead bool) ([]eventstore.Record, error) {
	recs, err := r.pages.readAll(ctx, r.src, pos, r.cfg.batchSize, pt.pr.partitions > 1)
	if err == nil && ahead && len(recs) == r.cfg.batchSize {
		r.pages.prefetch(r.background, r.src, recs[len(recs)-1].Position, r.cfg.batchSize)
	}
	return recs, err
}

// errStale reports that what Redis holds is not what the runner committed
// last.
var errStale = errors.New("projection: stored state is not what this runner committed")

// progressEvery is how often long catch-ups and rebuilds log their progress.
const progressEvery = 5 * time.Second

// progress logs a long read of the feed: records done of total (from the
// positions' sequence numbers, approximate) and the rate.
type progress struct {
	log      *slog.Logger
	msg      string
	from     eventstore.Position
	started  time.Time
	last     time.Time
	lastSeq  uint64
	reported bool
}

func newProgress(log *slog.Logger, msg string, from eventstore.Position) *progress {
	now := time.Now()
	return &progress{log: log, msg: msg, from: from, started: now, last: now, lastSeq: from.Seq}
}

// step logs the progress when progressEvery has passed since the last
// line.
func (p *progress) step(ctx context.Context, feed eventstore.FeedReader, at eventstore.Position) {
	now := time.Now()
	if now.Sub(p.last) < progressEvery {
		return
	}
	head, err := feed.Head(ctx)
	if err != nil {
		return
	}
	done := int64(at.Seq) - int64(p.from.Seq)
	total := int64(head.Seq) - int64(p.from.Seq)
	rate := float64(int64(at.Seq)-int64(p.lastSeq)) / now.Sub(p.last).Seconds()
	p.log.Info(p.msg, "done", max(done, 0), "of", max(total, 0), "per_second", int64(rate),
		"checkpoint", at.String(), "head", head.String())
	p.last, p.lastSeq, p.reported = now, at.Seq, true
}

// done logs the end of a read that logged progress.
func (p *progress) done(at eventstore.Position) {
	if p.reported {
		p.log.Info(p.msg+": done", "checkpoint", at.String(), "took", time.Since(p.started).Round(time.Millisecond))
	}
}
