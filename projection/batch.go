package projection

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/eventstore"
)

// work is what one batch writes to one target namespace (namespace i of
// its txn).
type work struct {
	st      *nsState
	i       int
	b       *Batch
	after   []func(context.Context)
	next    checkpoint
	vers    map[string]int64        // versions this batch sets
	staged  map[string]eventstoreID // streams newly blocked by this batch
	owned   []ownedWrites
	writes  bool // a record was applied or parked
	parked  int
	applied int
}

func (w *work) version(stream string) int64 {
	if v, ok := w.vers[stream]; ok {
		return v
	}
	return w.st.versions[stream]
}

func (w *work) blockedBy(stream string) (eventstoreID, bool) {
	if id, ok := w.st.blocked[stream]; ok {
		return id, true
	}
	id, ok := w.staged[stream]
	return id, ok
}

func (w *work) changed() bool {
	return w.writes || len(w.vers) > 0 || w.next.pos != w.st.ckpt.pos || w.next.verified != w.st.ckpt.verified
}

// applyBatch applies recs (records of the partition) to every target
// namespace and commits each target's writes, stream versions and new
// checkpoint in one transaction of the read-model store (txn), fenced by
// the lease and conditional on the stored checkpoints being the ones this
// runner committed last.
//
// What is applied is decided by each stream's last applied version, never
// by positions: a record at version last+1 is applied; one at or below
// last was applied (a redelivery, a duplicate) and is skipped; one above
// last+1 follows a hole, which is filled from the store (the stream's
// missing versions, in order) before it is applied. So records may arrive
// in any order, twice, or with holes. readTo, when not zero, is the feed
// position up to which recs are everything the feed holds of the
// partition: it becomes the verified position. A record that keeps failing
// is parked, and so are later records of its stream. On error nothing of
// the batch is kept in the targets (the session reloads). The caller holds
// pt.mu.
func (r *Runner) applyBatch(ctx context.Context, pt *part, targets []*nsState, recs []eventstore.Record, readTo eventstore.Position) error {
	if r.slots != nil {
		// WithConcurrency: at most that many partitions apply at once.
		select {
		case r.slots <- struct{}{}:
			defer func() { <-r.slots }()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := r.loadVersions(ctx, pt, targets, recs); err != nil {
		return err
	}
	err := r.applyBatchOnce(ctx, pt, targets, recs, readTo, false)
	if errors.Is(err, errRedoCarefully) {
		err = r.applyBatchOnce(ctx, pt, targets, recs, readTo, true)
	}
	return err
}

// applyBatchOnce is one try of applyBatch, record by record when careful.
func (r *Runner) applyBatchOnce(ctx context.Context, pt *part, targets []*nsState, recs []eventstore.Record, readTo eventstore.Position, careful bool) error {
	pr := pt.pr
	tx, err := r.be.begin(ctx, pt, targets, careful)
	if err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			tx.rollback(context.WithoutCancel(ctx))
		}
	}()
	now := time.Now().UTC()
	ws := make([]*work, len(targets))
	for i, st := range targets {
		// One entry per applied record: sized once, no regrowth per batch.
		ws[i] = &work{st: st, i: i, next: st.ckpt, b: tx.batch(i), owned: make([]ownedWrites, 0, len(recs))}
	}
	fills := map[string][]eventstore.Record{}
	for i := range recs {
		rec := &recs[i]
		for _, w := range ws {
			last := w.version(rec.StreamID)
			if rec.Version <= last {
				continue
			}
			if rec.Version > last+1 {
				missing, err := r.fill(ctx, pt, fills, rec.StreamID, last+1, rec.Version-1)
				if err != nil {
					return err
				}
				for j := range missing {
					f := &missing[j]
					if f.Version > w.version(f.StreamID) {
						if err := r.handle(ctx, pt, tx, w, f, now); err != nil {
							return err
						}
					}
				}
			}
			if err := r.handle(ctx, pt, tx, w, rec, now); err != nil {
				return err
			}
		}
	}
	changed := false
	for _, w := range ws {
		if !readTo.IsZero() {
			w.next.pos = maxPosition(w.next.pos, readTo)
			w.next.verified = maxPosition(w.next.verified, readTo)
		}
		changed = changed || w.changed()
	}
	if !changed {
		return nil
	}
	nexts := make([]checkpoint, len(ws))
	for i, w := range ws {
		nexts[i] = w.next
		if len(w.vers) > 0 {
			before := make(map[string]int64, len(w.vers))
			for s := range w.vers {
				before[s] = w.st.versions[s]
			}
			tx.setVersions(i, w.vers, before)
		}
	}
	committed = true
	failed, err := r.commit(ctx, tx, targets, nexts)
	if err != nil {
		return err
	}
	var after []func(context.Context)
	for _, w := range ws {
		if len(failed) > 0 {
			// The batch is committed, checkpoint included; the records
			// whose writes failed inside it are parked now, and block
			// their streams from the next batch on.
			n, err := r.parkPartial(ctx, pt, w, failed, now)
			if err != nil {
				return err
			}
			w.applied -= n
			w.parked += n
		}
		r.tel.committed(ctx, pr.name, w.applied, w.parked)
		st := w.st
		if len(st.versions)+len(w.vers) > maxCachedStreams || (st.serving && !r.be.cachesVersions()) {
			// Too many to keep, or another writer (an Inline) moves
			// them: the next batch reads them.
			st.versions, st.complete = make(map[string]int64), false
			w.vers = nil
		}
		for s, v := range w.vers {
			st.versions[s] = v
		}
		for stream, id := range w.staged {
			st.blocked[stream] = id
		}
		st.parked += w.parked
		if st.serving {
			pt.publish(st)
		}
		after = append(after, w.after...)
	}
	r.runAfter(ctx, pr, after)
	return nil
}

// handle applies (or parks) one record to one target. The caller checked
// that rec is the stream's next version; rec points into the batch's (or a
// fill's) records, which stay unchanged until the batch ends.
func (r *Runner) handle(ctx context.Context, pt *part, tx txn, w *work, rec *eventstore.Record, now time.Time) error {
	pr := pt.pr
	if w.vers == nil {
		w.vers = make(map[string]int64)
	}
	w.vers[rec.StreamID] = rec.Version
	if rec.Position.After(w.next.pos) {
		w.next.pos, w.next.lastAt = rec.Position, rec.RecordedAt
	}
	w.writes = true
	if first, ok := w.blockedBy(rec.StreamID); ok {
		firstID, _ := uuid.Parse(first)
		if err := tx.park(ctx, w.i, ParkedRecord{
			Record: *rec, Error: "waiting behind parked record " + first, ParkedAt: now, BlockedBy: firstID,
		}); err != nil {
			return err
		}
		w.parked++
		return nil
	}
	b := w.b
	b.replay = w.st.isReplay(*rec)
	slot, attempts, err := r.applyTraced(ctx, pr, tx, w.i, b, *rec)
	var terr *targetError
	if errors.As(err, &terr) {
		return terr.err
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		pt.log.Warn("projection: parking record", "namespace", w.st.ns.String(),
			"stream", rec.StreamID, "version", rec.Version, "position", rec.Position.String(),
			"type", rec.Type, "attempts", attempts, "err", err)
		r.recordError(pr, fmt.Errorf("parked %s v%d (position %s) after %d attempts: %w",
			rec.StreamID, rec.Version, rec.Position, attempts, err))
		if err := tx.park(ctx, w.i, ParkedRecord{
			Record: *rec, Error: err.Error(), Attempts: attempts, ParkedAt: now,
		}); err != nil {
			return err
		}
		if w.staged == nil {
			w.staged = make(map[string]eventstoreID)
		}
		w.staged[rec.StreamID] = rec.ID.String()
		w.parked++
		return nil
	}
	w.owned = append(w.owned, ownedWrites{rec: rec, slot: slot, after: [2]int{len(w.after), len(w.after) + len(b.after)}})
	w.after = append(w.after, b.after...)
	b.after = b.after[:0]
	w.applied++
	return nil
}

// loadVersions reads the stored versions of the streams of recs that the
// targets' caches do not hold, in one round trip.
func (r *Runner) loadVersions(ctx context.Context, pt *part, targets []*nsState, recs []eventstore.Record) error {
	var asks []*versionsAsk
	var sts []*nsState
	for _, st := range targets {
		if st.complete && (st.serving && r.be.cachesVersions() || !st.serving) {
			continue
		}
		seen := map[string]bool{}
		var streams []string
		for _, rec := range recs {
			if _, ok := st.versions[rec.StreamID]; ok || seen[rec.StreamID] {
				continue
			}
			seen[rec.StreamID] = true
			streams = append(streams, rec.StreamID)
		}
		if len(streams) > 0 {
			asks = append(asks, &versionsAsk{v: st.ns.Version, streams: streams})
			sts = append(sts, st)
		}
	}
	if len(asks) == 0 {
		return nil
	}
	if err := r.be.readVersions(ctx, pt.pr.name, pt.idx, asks); err != nil {
		return err
	}
	for i, a := range asks {
		for j, stream := range a.streams {
			sts[i].versions[stream] = a.versions[j]
		}
	}
	return nil
}

// fill reads versions from..to of a stream from the store: the records a
// delivery skipped. fills caches them for the batch.
func (r *Runner) fill(ctx context.Context, pt *part, fills map[string][]eventstore.Record, stream string, from, to int64) ([]eventstore.Record, error) {
	have := fills[stream]
	if len(have) > 0 && have[0].Version <= from && have[len(have)-1].Version >= to {
		return have, nil
	}
	pt.log.Info("projection: filling a hole from the store", "stream", stream, "from", from, "to", to)
	var out []eventstore.Record
	for rec, err := range r.src.ReadStream(ctx, stream, from) {
		if err != nil {
			return nil, fmt.Errorf("projection %q: read stream %q from v%d: %w", pt.pr.name, stream, from, err)
		}
		if rec.Version > to {
			break
		}
		out = append(out, rec)
	}
	if len(out) == 0 || out[len(out)-1].Version < to {
		return nil, fmt.Errorf("projection %q: stream %q: the store has no versions %d..%d that a delivery skipped", pt.pr.name, stream, from, to)
	}
	fills[stream] = out
	return out, nil
}

// ownedWrites locates one applied record's writes (its txn slot) and side
// effects (a half-open index range) in its batch. rec points into the
// batch's records (a pointer, not a copy: one entry per applied record).
type ownedWrites struct {
	rec   *eventstore.Record
	slot  int
	after [2]int
}

// parkPartial parks, after their batch committed, the records of w whose
// writes failed inside the commit (failed), drops their side effects and
// stages their streams as blocked. It returns how many it parked. The
// checkpoint is visible a moment before the parked records; a runner that
// dies in between leaves only the log line and the projection's last
// error.
func (r *Runner) parkPartial(ctx context.Context, pt *part, w *work, failed []failedWrite, now time.Time) (int, error) {
	pr := pt.pr
	bySlot := map[int]error{}
	for _, f := range failed {
		switch {
		case f.slot < 0:
			if f.i == w.i {
				pt.log.Error("projection: a write failed inside a committed batch", "err", f.err)
				r.recordError(pr, f.err)
			}
		case f.i == w.i:
			bySlot[f.slot] = f.err
		}
	}
	if len(bySlot) == 0 {
		return 0, nil
	}
	tx, err := r.be.begin(ctx, pt, []*nsState{w.st}, false)
	if err != nil {
		return 0, err
	}
	drop := map[int]bool{}
	n := 0
	for _, o := range w.owned {
		ferr, ok := bySlot[o.slot]
		if !ok {
			continue
		}
		rec := *o.rec
		reason := fmt.Sprintf("partially applied: %v; the record's other writes took effect", ferr)
		pt.log.Error("projection: parking a partially applied record", "namespace", w.st.ns.String(),
			"stream", rec.StreamID, "version", rec.Version, "position", rec.Position.String(), "type", rec.Type, "err", ferr)
		r.recordError(pr, fmt.Errorf("parked %s v%d (position %s): %s", rec.StreamID, rec.Version, rec.Position, reason))
		if err := tx.park(ctx, 0, ParkedRecord{Record: rec, Error: reason, Attempts: 1, ParkedAt: now, Partial: true}); err != nil {
			tx.rollback(ctx)
			return 0, err
		}
		n++
		for i := o.after[0]; i < o.after[1]; i++ {
			drop[i] = true
		}
		if _, ok := w.blockedBy(rec.StreamID); !ok {
			if w.staged == nil {
				w.staged = make(map[string]eventstoreID)
			}
			w.staged[rec.StreamID] = rec.ID.String()
		}
	}
	if err := r.commitState(ctx, pt, tx, []*nsState{w.st}, []checkpoint{w.st.ckpt}); err != nil {
		return 0, fmt.Errorf("projection %q: park partially applied records: %w", pr.name, err)
	}
	kept := w.after[:0]
	for i, fn := range w.after {
		if !drop[i] {
			kept = append(kept, fn)
		}
	}
	w.after = kept
	return n, nil
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

// applyOne applies one record to namespace i of tx through b, retrying
// under the backoff policy up to the configured attempts (at once for a
// Permanent error); it returns the kept slot and the number of attempts
// made. A failed attempt's writes are undone; a failure of the target
// itself (*targetError) ends the retries.
func (r *Runner) applyOne(ctx context.Context, pr *proj, tx txn, i int, b *Batch, rec eventstore.Record) (int, int, error) {
	attempts, slot := 0, 0
	err := backoff.Retry(ctx, r.cfg.backoff, func(ctx context.Context, attempt int) error {
		attempts = attempt
		s, err := tx.attempt(ctx, i, func() error { return safeApply(ctx, pr.p, b, rec) })
		if err == nil {
			slot = s
			return nil
		}
		b.after = b.after[:0]
		var terr *targetError
		if errors.As(err, &terr) || IsPermanent(err) || attempt >= r.cfg.attempts {
			return backoff.Stop(err)
		}
		return err
	})
	return slot, attempts, err
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
