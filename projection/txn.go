package projection

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/lease"
	"github.com/eskit/eskit/lease/redislease"
)

// txn is one commit of a partition's writes to one or more namespace
// versions (the serving one, and a rebuild's): the records' writes through
// their Batch, parked records, stream versions and the new checkpoints,
// all or nothing, fenced by the partition's lease and conditional on the
// stored checkpoints being the ones the runner committed last. A txn is
// used by one goroutine; after commit or rollback it is done.
type txn interface {
	// projection names the projection the txn writes.
	projection() string
	// batch returns the Batch that applies records to namespace i.
	batch(i int) *Batch
	// attempt runs one apply attempt of a record on namespace i's batch:
	// when fn fails, what it wrote is undone and fn's error returned;
	// otherwise the writes are kept, under the returned slot. An error
	// of the target itself (not fn's) is a *targetError: the batch
	// cannot go on.
	attempt(ctx context.Context, i int, fn func() error) (slot int, err error)
	// park stores a parked record of namespace i; unpark drops parked
	// records by event ID.
	park(ctx context.Context, i int, rec ParkedRecord) error
	unpark(ctx context.Context, i int, ids []string) error
	// setVersions records the last applied version of streams of
	// namespace i, decided from the versions before.
	setVersions(i int, vers, before map[string]int64)
	// commit commits it all with each namespace's next checkpoint (its
	// commit counter advanced). It fails with ErrLeaseLost when the
	// runner does not hold the lease, and with errStale when a stored
	// checkpoint is not the one the runner committed last. failed lists
	// the kept slots whose writes failed inside a commit that took place
	// (Redis runs a transaction's commands even when one fails).
	commit(ctx context.Context, nexts []checkpoint) (failed []failedWrite, err error)
	// rollback drops what was not committed.
	rollback(ctx context.Context)
}

// failedWrite is a kept slot of namespace i whose writes failed inside a
// committed transaction.
type failedWrite struct {
	i, slot int
	err     error
}

// errRedoCarefully asks for a batch to be applied again with careful set
// (see backend.begin): a record failed after writing what the target
// cannot undo on its own.
var errRedoCarefully = errors.New("projection: redo the batch record by record")

// targetError is a failure of the read-model store during a batch (not of
// the projection's apply function).
type targetError struct{ err error }

func (e *targetError) Error() string { return e.err.Error() }
func (e *targetError) Unwrap() error { return e.err }

// redisTxn queues a batch's commands and runs them in one MULTI/EXEC
// under WATCH of the partition's lease and the checkpoints.
type redisTxn struct {
	b   *redisBackend
	pt  *part
	sts []*nsState
	ns  []redisNS
}

// redisNS is what a redisTxn queued for one namespace.
type redisNS struct {
	batch *Batch
	cmds  []redis.Cmder
	slots [][2]int // kept attempts: their commands, cmds[s[0]:s[1]]
	vers  map[string]int64
}

func (b *redisBackend) begin(_ context.Context, pt *part, sts []*nsState, _ bool) (txn, error) {
	t := &redisTxn{b: b, pt: pt, sts: sts, ns: make([]redisNS, len(sts))}
	for i, st := range sts {
		t.ns[i].batch = &Batch{pipe: b.rdb.Pipeline(), reader: b.rdb, ns: st.ns}
	}
	return t, nil
}

func (t *redisTxn) projection() string { return t.pt.pr.name }

func (t *redisTxn) batch(i int) *Batch { return t.ns[i].batch }

func (t *redisTxn) attempt(_ context.Context, i int, fn func() error) (int, error) {
	n := &t.ns[i]
	err := fn()
	if err == nil && len(n.batch.queued) > 0 {
		err = Permanent(errors.New("Batch.Queue is for PostgreSQL targets: on Redis, queue the writes on Batch.Pipe"))
	}
	if err != nil {
		n.batch.pipe.Discard()
		n.batch.queued = n.batch.queued[:0]
		return 0, err
	}
	start := len(n.cmds)
	n.cmds = append(n.cmds, n.batch.pipe.Cmds()...)
	n.batch.pipe.Discard()
	n.slots = append(n.slots, [2]int{start, len(n.cmds)})
	return len(n.slots) - 1, nil
}

func (t *redisTxn) park(ctx context.Context, i int, rec ParkedRecord) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("projection %q: encode parked record: %w", t.pt.pr.name, err)
	}
	k := t.pt.pr.k
	t.ns[i].cmds = append(t.ns[i].cmds, redis.NewIntCmd(ctx, "hset", k.parked(t.pt.idx, t.sts[i].ns.Version), rec.Record.ID.String(), data))
	return nil
}

func (t *redisTxn) unpark(ctx context.Context, i int, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	args := make([]any, 0, 2+len(ids))
	args = append(args, "hdel", t.pt.pr.k.parked(t.pt.idx, t.sts[i].ns.Version))
	for _, id := range ids {
		args = append(args, id)
	}
	t.ns[i].cmds = append(t.ns[i].cmds, redis.NewIntCmd(ctx, args...))
	return nil
}

func (t *redisTxn) setVersions(i int, vers, _ map[string]int64) { t.ns[i].vers = vers }

func (t *redisTxn) rollback(context.Context) {}

// commit runs the queued commands and writes each namespace's next
// checkpoint (with the commit counter advanced) in one MULTI/EXEC. It runs
// under WATCH of the partition's lease and of the checkpoints, and only
// while this runner holds the lease and every stored checkpoint's commit
// counter is the one this runner committed last: a deposed runner cannot
// commit, and a runner whose Redis went back in time (a failover to a
// lagging replica, a restore, a flush) gets errStale instead of writing
// over what is there.
func (t *redisTxn) commit(ctx context.Context, nexts []checkpoint) ([]failedWrite, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	pt, pr := t.pt, t.pt.pr
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
	watched := []string{t.b.leases.Key(held.Name)}
	for _, st := range t.sts {
		watched = append(watched, pr.k.checkpoint(pt.idx, st.ns.Version))
	}
	var marker redis.Cmder
	err := t.b.watch(ctx, watched, func(tx *redis.Tx, watch func(p redis.Pipeliner) *redis.Cmd) error {
		var fence *redislease.WatchCheck
		var watchCmd *redis.Cmd
		seqs := make([]*redis.StringCmd, len(t.sts))
		if _, err := tx.Pipelined(ctx, func(p redis.Pipeliner) error {
			watchCmd = watch(p)
			fence = t.b.leases.Check(ctx, p, held)
			for i := range t.sts {
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
		for i, st := range t.sts {
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
			for i, st := range t.sts {
				n := &t.ns[i]
				_ = p.BatchProcess(ctx, n.cmds...)
				if len(n.vers) > 0 {
					args := make([]any, 0, 2*len(n.vers))
					for s, v := range n.vers {
						args = append(args, s, v)
					}
					p.HSet(ctx, pr.k.streams(pt.idx, st.ns.Version), args...)
				}
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
		// Committed, but commands failed inside EXEC: find their records.
		return t.failedWrites(err), nil
	default:
		return nil, fmt.Errorf("projection %q: commit: %w", pr.name, err)
	}
}

// failedWrites returns the kept slots one of whose commands failed inside
// the EXEC (and, as slot -1, failed commands of no slot: a park or an
// unpark).
func (t *redisTxn) failedWrites(execErr error) []failedWrite {
	var out []failedWrite
	for i := range t.ns {
		n := &t.ns[i]
		inSlot := make([]bool, len(n.cmds))
		for s, span := range n.slots {
			for _, c := range n.cmds[span[0]:span[1]] {
				if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
					out = append(out, failedWrite{i: i, slot: s, err: fmt.Errorf("command %q failed inside the batch's EXEC: %w", c.Name(), err)})
					break
				}
			}
			for j := span[0]; j < span[1]; j++ {
				inSlot[j] = true
			}
		}
		for j, c := range n.cmds {
			if err := c.Err(); !inSlot[j] && err != nil && !errors.Is(err, redis.Nil) {
				out = append(out, failedWrite{i: i, slot: -1, err: fmt.Errorf("command %q failed inside the batch's EXEC: %w", c.Name(), err)})
			}
		}
	}
	if len(out) == 0 {
		out = append(out, failedWrite{slot: -1, err: fmt.Errorf("projection %q: a command of the committed batch failed: %w", t.pt.pr.name, execErr)})
	}
	return out
}

// watch runs fn in a transaction that watches keys. fn sends the WATCH
// itself, with watch, in the pipeline of its first reads: on a single
// server that saves the round trip of a WATCH of its own (a Redis Cluster
// client sends it first, as it routes the transaction by the keys; watch
// then queues nothing and returns nil). When fn fails before its EXEC ran,
// the keys are unwatched, so that the connection goes back to the pool
// without them.
func (b *redisBackend) watch(ctx context.Context, keys []string, fn func(tx *redis.Tx, watch func(p redis.Pipeliner) *redis.Cmd) error) error {
	c, single := b.rdb.(*redis.Client)
	if !single {
		return b.rdb.Watch(ctx, func(tx *redis.Tx) error {
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
