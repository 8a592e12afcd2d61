package projection

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/eventstore"
)

// metaPoll is how often a session reads its projection's meta (first build
// completion, rebuilds, switches).
const metaPoll = 100 * time.Millisecond

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
		more, err := r.catchUpPage(ctx, pt)
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

// load reads the namespace the partition must write: the active one, or
// the one its projection's first build writes. A partition of the active
// namespace whose checkpoint is gone lost its data: it is marked lost (the
// read model is not served until it is rebuilt) and rebuilt in place from
// the store.
func (r *Runner) load(ctx context.Context, pt *part) (*nsState, error) {
	pr := pt.pr
	before, err := readMeta(ctx, r.rdb, pr.k)
	if err != nil {
		return nil, err
	}
	// The registry and the meta may be gone with the data (a flush): put
	// them back, so operators' tools see the projection at once.
	if err := r.register(ctx, pr); err != nil {
		return nil, err
	}
	m, err := readMeta(ctx, r.rdb, pr.k)
	if err != nil {
		return nil, err
	}
	// What this runner committed had its side effects: if Redis holds
	// less, those records are replayed. The hint only grows.
	hint := pt.replayHint
	if m.active == 0 {
		// First build: the version and the end of its history are fixed
		// by the first runner to get here, so all partitions and every
		// runner that takes one over replay the same history.
		if m.building == 0 {
			if err := r.rdb.HSetNX(ctx, pr.k.meta(), "building", 1).Err(); err != nil {
				return nil, fmt.Errorf("projection %q: first build: %w", pr.name, err)
			}
		}
		if m.until.IsZero() {
			head, err := r.src.Head(ctx)
			if err != nil {
				return nil, fmt.Errorf("projection %q: first build: read the feed's head: %w", pr.name, err)
			}
			if err := r.rdb.HSetNX(ctx, pr.k.meta(), "until", head.String()).Err(); err != nil {
				return nil, fmt.Errorf("projection %q: first build: record its end: %w", pr.name, err)
			}
		}
		if m, err = readMeta(ctx, r.rdb, pr.k); err != nil {
			return nil, err
		}
		if m.active != 0 {
			return r.load(ctx, pt)
		}
		st, err := r.loadNamespace(ctx, pt, m.building)
		if err != nil {
			return nil, err
		}
		if !st.ckpt.exists {
			if err := r.clearPartition(ctx, pt); err != nil {
				return nil, err
			}
			st.complete = true
		}
		// History is what the feed held when the build began (and what
		// this runner committed). When the meta itself was gone (Redis
		// lost the projection) and this runner applied the partition
		// before, history is exactly what it had committed: later records
		// never had their side effects.
		st.replayUntil = maxPosition(m.until, hint)
		if !before.exists && !hint.IsZero() {
			st.replayUntil = hint
		}
		st.replay = st.ckpt.pos.Before(st.replayUntil)
		st.unswitched = true
		return st, nil
	}
	st, err := r.loadNamespace(ctx, pt, m.active)
	if err != nil {
		return nil, err
	}
	if !st.ckpt.exists {
		// Every partition of a built namespace has a checkpoint: this one
		// lost its data. Readers are told the model is not ready until the
		// partition is rebuilt; its history is replayed (no side effects)
		// up to the head of now.
		head, herr := r.src.Head(ctx)
		if herr != nil {
			return nil, fmt.Errorf("projection %q: read the feed's head: %w", pr.name, herr)
		}
		pt.log.Error("projection partition lost its data; rebuilding it from the store", "version", m.active)
		r.recordError(pr, fmt.Errorf("partition %d of v%d lost its data; rebuilding it from the store", pt.idx, m.active))
		if err := r.rdb.HSet(ctx, pr.k.meta(), lostField+strconv.Itoa(pt.idx), m.active).Err(); err != nil {
			return nil, fmt.Errorf("projection %q: mark partition %d lost: %w", pr.name, pt.idx, err)
		}
		if _, err := deleteMatching(ctx, r.rdb, pr.k.versionPattern(pt.idx, m.active)); err != nil {
			return nil, fmt.Errorf("projection %q: clear partition %d: %w", pr.name, pt.idx, err)
		}
		st.complete = true
		st.replay, st.replayUntil = true, head
		if !hint.IsZero() {
			st.replayUntil = hint
		}
		st.lost = true
		return st, nil
	}
	if !hint.IsZero() && st.ckpt.pos.Before(hint) {
		// Redis went back in time under this runner: what it applied after
		// the stored checkpoint already had its side effects.
		st.replay, st.replayUntil = true, hint
	}
	return st, nil
}

// clearPartition deletes every versioned key of a partition that has no
// active namespace (leftovers of an earlier, lost build).
func (r *Runner) clearPartition(ctx context.Context, pt *part) error {
	if _, err := deleteMatching(ctx, r.rdb, pt.pr.k.allVersionsPattern(pt.idx)); err != nil {
		return fmt.Errorf("projection %q: clear partition %d: %w", pt.pr.name, pt.idx, err)
	}
	return nil
}

func maxPosition(a, b eventstore.Position) eventstore.Position {
	if a.Before(b) {
		return b
	}
	return a
}

// loadNamespace reads a partition's checkpoint and parked records of
// namespace v.
func (r *Runner) loadNamespace(ctx context.Context, pt *part, v int64) (*nsState, error) {
	k := pt.pr.k
	c, err := readCheckpoint(ctx, r.rdb, k, pt.idx, v)
	if err != nil {
		return nil, err
	}
	parked, err := readParked(ctx, r.rdb, k, pt.idx, v)
	if err != nil {
		return nil, err
	}
	st := &nsState{ns: k.namespace(v, pt.idx, pt.pr.partitions), ckpt: c, versions: make(map[string]int64)}
	st.setParked(parked)
	return st, nil
}

// setParked rebuilds the blocked-stream index from the parked records.
func (st *nsState) setParked(parked []ParkedRecord) {
	st.blocked = make(map[string]eventstoreID)
	st.parked = len(parked)
	for _, p := range parked {
		if _, ok := st.blocked[p.Record.StreamID]; !ok {
			st.blocked[p.Record.StreamID] = p.Record.ID.String()
		}
	}
}

// targets returns the namespaces a batch of the partition writes: the
// serving one, and a rebuild's once it follows. The caller holds pt.mu.
func (pt *part) targets() []*nsState {
	if pt.next != nil && pt.next.following {
		return []*nsState{pt.cur, pt.next}
	}
	return []*nsState{pt.cur}
}

// mine returns the records of recs that belong to the partition.
func (pt *part) mine(recs []eventstore.Record) []eventstore.Record {
	if pt.pr.partitions == 1 {
		return recs
	}
	out := make([]eventstore.Record, 0, len(recs)/pt.pr.partitions+1)
	for _, rec := range recs {
		if eventstore.StreamPartition(rec.StreamID, pt.pr.partitions) == pt.idx {
			out = append(out, rec)
		}
	}
	return out
}

// catchUpPage applies the next page of the feed after the serving
// namespace's verified position; it reports whether the page was full
// (more may follow). The caller holds pt.mu.
func (r *Runner) catchUpPage(ctx context.Context, pt *part) (bool, error) {
	st := pt.cur
	recs, err := r.readFeed(ctx, pt, st.ckpt.verified)
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
		more, err := r.catchUpPage(ctx, pt)
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
			_ = r.cfg.wait(wctx, pos)
		} else {
			<-wctx.Done()
		}
		cancel()
		if ctx.Err() != nil {
			return nil
		}
	}
}

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
	if !force && !m.busy && now.Sub(m.lastMeta) < metaPoll {
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
	pipe := r.rdb.Pipeline()
	metaCmd := pipe.HGetAll(ctx, pr.k.meta())
	// Under pt.mu, so that no commit (a parked-record operation from the
	// control loop) moves the counter between the read and the comparison.
	pt.mu.Lock()
	var seqCmd *redis.StringCmd
	var wantSeq string
	if st := pt.cur; st != nil {
		seqCmd = pipe.HGet(ctx, pr.k.checkpoint(pt.idx, st.ns.Version), "seq")
		if st.ckpt.exists {
			wantSeq = strconv.FormatInt(st.ckpt.seq, 10)
		}
	}
	_, err := pipe.Exec(ctx)
	pt.mu.Unlock()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("projection %q: read meta: %w", pr.name, err)
	}
	md, err := parseMeta(pr.name, metaCmd.Val())
	if err != nil {
		return err
	}
	if seqCmd != nil && seqCmd.Val() != wantSeq {
		return fmt.Errorf("%w: checkpoint of partition %d is at commit %q, this runner committed %q", errStale, pt.idx, seqCmd.Val(), wantSeq)
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
		if err := r.rdb.HDel(ctx, pr.k.meta(), lostField+strconv.Itoa(pt.idx)).Err(); err != nil {
			return fmt.Errorf("projection %q: partition %d rebuilt: %w", pr.name, pt.idx, err)
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
	return r.commitState(ctx, pt, []*nsState{st}, []checkpoint{next}, nil)
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
		more, err := r.catchUpPage(ctx, pt)
		pt.mu.Unlock()
		if err != nil || !more {
			return err
		}
	}
}

// readCheckpoint reads a partition's checkpoint of namespace v.
func readCheckpoint(ctx context.Context, rdb redis.Cmdable, k keys, p int, v int64) (checkpoint, error) {
	vals, err := rdb.HGetAll(ctx, k.checkpoint(p, v)).Result()
	if err != nil {
		return checkpoint{}, fmt.Errorf("projection %q: read checkpoint: %w", k.name, err)
	}
	return parseCheckpoint(k.name, vals)
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

// readFeed reads the page of the feed after pos; the partitions of a
// partitioned projection share pages through the runner's cache.
func (r *Runner) readFeed(ctx context.Context, pt *part, pos eventstore.Position) ([]eventstore.Record, error) {
	if pt.pr.partitions == 1 {
		return r.src.ReadAll(ctx, pos, r.cfg.batchSize)
	}
	return r.pages.readAll(ctx, r.src, pos, r.cfg.batchSize)
}
