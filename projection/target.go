package projection

import (
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Target is where a runner keeps its projections' read models and their
// bookkeeping (checkpoints, stream versions, parked records, leases,
// rebuild marks): Redis or Postgres. The runner's machinery is the same
// on every target; a projection's apply function writes through its
// Batch with the target's handle (Batch.Pipe on Redis, Batch.Tx and
// Batch.Queue on PostgreSQL).
type Target interface {
	// backend returns the target's store of the runner's state under the
	// key prefix.
	backend(prefix string) (backend, error)
}

// Redis returns the Redis target on rdb (a single server, or a Redis
// Cluster): a batch's writes are queued on a pipeline and committed with
// the checkpoint in one MULTI/EXEC.
func Redis(rdb redis.UniversalClient) Target { return redisTarget{rdb} }

type redisTarget struct{ rdb redis.UniversalClient }

func (t redisTarget) backend(prefix string) (backend, error) {
	if t.rdb == nil {
		return nil, fmt.Errorf("projection: the Redis target has no client")
	}
	if err := ValidatePrefix(prefix); err != nil {
		return nil, err
	}
	return newRedisBackend(t.rdb, prefix), nil
}
