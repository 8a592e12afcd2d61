package projection

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// leases are a runner's hold on partitions: for each partition it applies,
// a Redis key (keys.lease) holding the runner's owner token, set with a
// time to live and renewed while the runner applies it. Every commit is
// fenced by it (commitTx checks the owner under WATCH), so a runner that
// lost its lease can never write.
type leases struct {
	rdb   redis.UniversalClient
	owner string
	ttl   time.Duration

	acquireScript *redis.Script
	renewScript   *redis.Script
	releaseScript *redis.Script
}

func newLeases(rdb redis.UniversalClient, owner string, ttl time.Duration) *leases {
	return &leases{
		rdb: rdb, owner: owner, ttl: ttl,
		acquireScript: redis.NewScript(acquireLua),
		renewScript:   redis.NewScript(renewLua),
		releaseScript: redis.NewScript(releaseLua),
	}
}

// acquireLua sets the lease to the owner ARGV[1] for ARGV[2] ms when it is
// free, or extends it when the owner holds it; it returns 1 when the owner
// holds the lease, 0 when another does.
const acquireLua = `
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0`

// renewLua returns 1 when renewed, 0 when another runner holds the lease,
// -1 when the lease key is gone (expired, or wiped).
const renewLua = `
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if not v then
  return -1
end
return 0`

// releaseLua deletes the lease when the owner ARGV[1] holds it.
const releaseLua = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`

// acquire takes the lease at key (SET NX PX), or extends it when the
// runner already holds it; it reports whether the runner holds it.
func (l *leases) acquire(ctx context.Context, key string) (bool, error) {
	n, err := l.acquireScript.Run(ctx, l.rdb, []string{key}, l.owner, l.ttl.Milliseconds()).Int()
	return n == 1, err
}

// renew extends the lease at key: 1 when renewed, 0 when another runner
// holds it, -1 when the key is gone.
func (l *leases) renew(ctx context.Context, key string) (int, error) {
	return l.renewScript.Run(ctx, l.rdb, []string{key}, l.owner, l.ttl.Milliseconds()).Int()
}

// release deletes the lease at key when the runner holds it.
func (l *leases) release(ctx context.Context, key string) error {
	return l.releaseScript.Run(ctx, l.rdb, []string{key}, l.owner).Err()
}

// acquire takes the partition's lease, or extends it when the runner
// already holds it.
func (r *Runner) acquire(ctx context.Context, pt *part) (bool, error) {
	pt.leaseMu.Lock()
	defer pt.leaseMu.Unlock()
	return r.leases.acquire(ctx, pt.pr.k.lease(pt.idx))
}

// release gives the partition's lease back.
func (r *Runner) release(ctx context.Context, pt *part) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	pt.leaseMu.Lock()
	defer pt.leaseMu.Unlock()
	if err := r.leases.release(rctx, pt.pr.k.lease(pt.idx)); err != nil {
		pt.log.Warn("projection: release lease", "err", err)
	}
}

// renewLoop renews the partition's lease until ctx ends; it cancels the
// session with ErrLeaseLost when another runner holds the lease, the key
// is gone, or renewals keep failing for a whole TTL.
func (r *Runner) renewLoop(ctx context.Context, cancel context.CancelCauseFunc, pt *part) {
	t := time.NewTicker(r.cfg.renewEvery)
	defer t.Stop()
	lastOK := time.Now()
	key := pt.pr.k.lease(pt.idx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pt.leaseMu.Lock()
		n, err := r.leases.renew(ctx, key)
		pt.leaseMu.Unlock()
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			pt.log.Warn("projection: renew lease", "err", err, "failing_since", lastOK)
			if time.Since(lastOK) >= r.cfg.leaseTTL {
				cancel(fmt.Errorf("%w: renewals failing since %s: %w", ErrLeaseLost, lastOK.Format(time.RFC3339Nano), err))
				return
			}
		case n == 0:
			cancel(fmt.Errorf("%w: another runner holds it", ErrLeaseLost))
			return
		case n < 0:
			cancel(fmt.Errorf("%w: the lease key is gone (expired, or Redis lost it)", ErrLeaseLost))
			return
		default:
			lastOK = time.Now()
		}
	}
}
