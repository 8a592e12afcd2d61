package projection

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/eskit/eskit/lease"
)

// Partition leases. A runner applies a partition only while it holds the
// partition's lease: a lease.Keeper of the lease "<projection>:<p>" on a
// redislease.Store in the read model's Redis, under the runner's key
// prefix. The lease name is its key's hash tag, {N:p}, the tag of every
// other key of the partition, so on a Redis Cluster the lease, the
// checkpoint and the read model's keys of one partition share a slot.
// Every commit runs under WATCH of the lease's key and checks, in the
// same transaction, that the runner's lease is the live one (commitTx), so
// a runner that lost its lease can never write. The lease has to be in
// the Redis the commits write: a lease kept anywhere else could not fence
// a MULTI/EXEC.

// leaseName returns the name of partition p's lease.
func leaseName(projection string, p int) string {
	return projection + ":" + strconv.Itoa(p)
}

// partLeases is the lease store a partition's Keeper works through. A
// renewal changes the lease's hash, which would abort the WATCH of a
// commit in flight, so renewals wait for the partition's commits
// (leaseMu). With keep, releases are left out, as when a runner crashes.
type partLeases struct {
	lease.Store
	mu   *sync.RWMutex
	keep bool
}

func (s partLeases) Renew(ctx context.Context, l lease.Lease, ttl time.Duration) (lease.Lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.Store.Renew(ctx, l, ttl)
}

func (s partLeases) Release(ctx context.Context, l lease.Lease) error {
	if s.keep {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.Store.Release(ctx, l)
}

// newKeeper returns the Keeper of partition pt's lease.
func (r *Runner) newKeeper(pt *part) (*lease.Keeper, error) {
	k, err := lease.NewKeeper(partLeases{Store: r.be.leaseStore(), mu: &pt.leaseMu, keep: r.cfg.keepLease},
		leaseName(pt.pr.name, pt.idx),
		lease.WithHolder(r.token),
		lease.WithTTL(r.cfg.leaseTTL),
		lease.WithRenewInterval(r.cfg.renewEvery),
		lease.WithLogger(pt.log))
	if err != nil {
		return nil, fmt.Errorf("projection %q: %w", pt.pr.name, err)
	}
	return k, nil
}

// leaseLost returns the error a session ends with when the partition's
// lease is lost: it matches ErrLeaseLost and lease.ErrLost.
func leaseLost(pt *part, err error) error {
	return fmt.Errorf("%w: %q partition %d: %w", ErrLeaseLost, pt.pr.name, pt.idx, err)
}

// watchLostLease ends the session (cancel) with ErrLeaseLost as soon as
// the held lease is lost; call the returned function to stop watching.
func watchLostLease(pt *part, h *lease.Held, cancel context.CancelCauseFunc) func() bool {
	return context.AfterFunc(h.Context(), func() {
		if err := h.Err(); errors.Is(err, lease.ErrLost) {
			cancel(leaseLost(pt, err))
			// The runner no longer applies the partition, even while the
			// session is still stuck on a call to an unreachable store.
			pt.vmu.Lock()
			pt.active = false
			pt.vmu.Unlock()
		}
	})
}

// release gives the partition's lease back (after the session stopped
// writing); a lease already lost stays so.
func (r *Runner) release(ctx context.Context, pt *part, h *lease.Held) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := h.Release(rctx); err != nil && !errors.Is(err, lease.ErrLost) {
		pt.log.Warn("projection: release lease", "err", err)
	}
}
