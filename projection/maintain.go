package projection

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// maintenance is a session's bookkeeping between batches.
type maintenance struct {
	lastMeta   time.Time
	lastVerify time.Time
	verifyNow  bool
	// busy reports work left (a rebuild page), so the loop should not
	// wait for new records.
	busy bool
}

// maintain runs between batches: it verifies the live side against the
// store when due, reads the projection's meta when due, finishes a first
// build or an in-place rebuild of a lost partition, follows a blue/green
// rebuild (one page per call) and switches to its namespace.
func (r *Runner) maintain(ctx context.Context, pt *part, m *maintenance, force bool) error {
	if pt.handover.Load() {
		return errRebalance
	}
	now := time.Now()
	if m.verifyNow || (r.cfg.js != nil && now.Sub(m.lastVerify) >= r.cfg.verifyEvery) {
		if err := r.verify(ctx, pt, m.verifyNow); err != nil {
			return err
		}
		m.verifyNow, m.lastVerify = false, time.Now()
	}
	poked := pt.metaNow.Swap(false)
	if !force && !m.busy && !poked && now.Sub(m.lastMeta) < metaPoll {
		return nil
	}
	m.lastMeta = now
	m.busy = false
	pr := pt.pr
	// The meta, and this partition's checkpoint: when the stored commit
	// counter is not the one this runner wrote last, Redis went back in
	// time or lost the partition's data (a failover to a lagging replica,
	// a restart from an older file, a flush) and the runner reloads at
	// once, even when no new record comes to make a commit notice it.
	// Under pt.mu, so that no commit (a parked-record operation from the
	// control loop) moves the counter between the read and the comparison.
	pt.mu.Lock()
	var v int64
	var wantSeq string
	if st := pt.cur; st != nil {
		v = st.ns.Version
		if st.ckpt.exists {
			wantSeq = strconv.FormatInt(st.ckpt.seq, 10)
		}
	}
	md, seq, err := r.be.metaAndSeq(ctx, pr.name, pt.idx, v)
	pt.mu.Unlock()
	if err != nil {
		return err
	}
	if v != 0 && seq != wantSeq {
		return fmt.Errorf("%w: checkpoint of partition %d is at commit %q, this runner committed %q", errStale, pt.idx, seq, wantSeq)
	}
	if !md.exists {
		// The meta is gone (Redis flushed or restored without it): this
		// runner's state no longer matches; reload.
		return fmt.Errorf("%w: the projection's meta is gone", errStale)
	}
	pt.mu.Lock()
	defer pt.mu.Unlock()
	st := pt.cur
	if st == nil {
		return nil
	}
	caughtUp := !st.replay || !st.ckpt.pos.Before(st.replayUntil)
	if md.active == st.ns.Version && st.unswitched {
		st.unswitched = false
		pt.publish(st)
	}
	switch {
	case md.active == 0:
		// First build: mark this partition ready once its history is
		// applied, and switch when all are.
		if md.building != st.ns.Version {
			return fmt.Errorf("%w: first build version changed to %d", errStale, md.building)
		}
		if caughtUp {
			if err := r.markReady(ctx, pt, st); err != nil {
				return err
			}
			switched, err := r.trySwitch(ctx, pr, st.ns.Version, "building")
			if err != nil {
				return err
			}
			if switched {
				st.unswitched = false
				pt.publish(st)
			}
		}
		return nil
	case md.active != st.ns.Version:
		if pt.next != nil && pt.next.ns.Version == md.active {
			return r.switchTo(ctx, pt)
		}
		return fmt.Errorf("%w: active version changed to %d", errStale, md.active)
	}
	if st.lost && caughtUp {
		if err := r.markReady(ctx, pt, st); err != nil {
			return err
		}
		if err := r.be.clearLost(ctx, pr.name, pt.idx); err != nil {
			return err
		}
		st.lost = false
		pt.publish(st)
		pt.log.Info("projection partition rebuilt after losing its data", "checkpoint", st.ckpt.pos.String())
	}
	if st.replay && caughtUp {
		st.replay = false
	}
	if md.rebuild > st.ns.Version {
		if err := r.rebuildStep(ctx, pt, md.rebuild, m); err != nil {
			return err
		}
		m.busy = pt.next != nil && !pt.next.following
	} else if pt.next != nil {
		r.dropRebuild(pt)
	}
	return nil
}

// markReady records in the checkpoint of st that its partition replayed
// its history. The caller holds pt.mu.
func (r *Runner) markReady(ctx context.Context, pt *part, st *nsState) error {
	if st.ckpt.ready {
		return nil
	}
	next := st.ckpt
	next.ready = true
	tx, err := r.be.begin(ctx, pt, []*nsState{st}, false)
	if err != nil {
		return err
	}
	return r.commitState(ctx, pt, tx, []*nsState{st}, []checkpoint{next})
}

// verify applies from the store what the live side did not get: it reads
// the feed from the verified position up to the live side's checkpoint
// (or, with all, as far as the feed goes), skipping records already
// applied by their stream versions, and advances the verified position.
// The caller does not hold pt.mu.
func (r *Runner) verify(ctx context.Context, pt *part, all bool) error {
	for {
		pt.mu.Lock()
		st := pt.cur
		if st == nil || !all && !st.ckpt.verified.Before(st.ckpt.pos) {
			pt.mu.Unlock()
			return nil
		}
		more, err := r.catchUpPage(ctx, pt, false)
		pt.mu.Unlock()
		if err != nil || !more {
			return err
		}
	}
}
