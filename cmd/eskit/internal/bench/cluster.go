package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/internal/infra/localproc"
	"github.com/eskit/eskit/internal/infra/redisconn"
	"github.com/eskit/eskit/projection"
)

// The throwaway Redis Cluster the bench starts when no -redis-cluster-url
// is given: 3 masters with one replica each on free loopback ports, no
// persistence, in a temporary directory.
const (
	clusterMasters  = 3
	clusterReplicas = 1
	// clusterNodeTimeout is cluster-node-timeout. The bench kills no node,
	// so it is generous: a busy two-core machine must not fail a master
	// over in the middle of a measurement.
	clusterNodeTimeout = 5 * time.Second
)

// localCluster is a Redis Cluster of redis-server processes the bench
// started; stop kills every one by PID.
type localCluster struct {
	dir string
	rc  *localproc.RedisCluster
}

// startLocalCluster starts the cluster and waits until every node agrees
// that it is healthy.
func startLocalCluster(ctx context.Context, log *slog.Logger) (_ *localCluster, err error) {
	server, err := findBinary("redis-server", "redis-server", "redis-cluster-url")
	if err != nil {
		return nil, err
	}
	cli, err := findBinary("redis-cli", "redis-tools", "redis-cluster-url")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "eskit-bench-cluster-")
	if err != nil {
		return nil, fmt.Errorf("bench: Redis Cluster: %w", err)
	}
	lc := &localCluster{dir: dir, rc: localproc.NewRedisCluster(localproc.RedisClusterConfig{
		Server: server, CLI: cli, Dir: dir,
		Masters: clusterMasters, Replicas: clusterReplicas, NodeTimeout: clusterNodeTimeout,
		PingTimeout: 15 * time.Second, OnStart: noteChild,
	})}
	defer func() {
		if err != nil {
			if serr := lc.stop(); serr != nil {
				log.Error("bench: stop the Redis Cluster", "err", serr)
			}
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	began := time.Now()
	if err := lc.rc.Start(ctx); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	log.Info("bench: local Redis Cluster up", "masters", clusterMasters, "replicas", clusterMasters*clusterReplicas,
		"took", time.Since(began).Round(time.Millisecond), "url", lc.url())
	return lc, nil
}

// url is the cluster's redis+cluster:// URL with every node as a seed.
func (lc *localCluster) url() string { return lc.rc.URL() }

// stop kills every node by PID and removes the cluster's directory.
func (lc *localCluster) stop() error {
	var errs []error
	if err := lc.rc.Close(); err != nil {
		errs = append(errs, fmt.Errorf("bench: %w", err))
	}
	if err := os.RemoveAll(lc.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// openCluster connects the run to a Redis Cluster: the one at url, or a
// throwaway local one when url is empty. It returns a description for the
// versions and registers the clean-up with later.
func (e *env) openCluster(ctx context.Context, url string) (string, error) {
	local := false
	if url == "" {
		lc, err := startLocalCluster(ctx, e.log)
		if err != nil {
			return "", err
		}
		e.later = append(e.later, func(context.Context) error { return lc.stop() })
		url = lc.url()
		local = true
	}
	c, err := redisconn.Open(ctx, url, redisconn.WithPing())
	if err != nil {
		return "", fmt.Errorf("bench: Redis Cluster: %w", err)
	}
	cc, ok := c.(*redis.ClusterClient)
	if !ok {
		_ = c.Close()
		return "", fmt.Errorf("bench: -redis-cluster-url %s is not a cluster URL (want redis+cluster://host1:port1,host2:port2,...)", redisconn.Redact(url))
	}
	e.cluster = cc
	e.later = append(e.later, func(ctx context.Context) error {
		err := clusterDeletePrefix(ctx, cc, e.prefix)
		return errors.Join(err, cc.Close())
	})
	info, err := cc.Info(ctx, "server").Result()
	if err != nil {
		return "", fmt.Errorf("bench: Redis Cluster: %w", err)
	}
	masters := 0
	var mu sync.Mutex
	if err := cc.ForEachMaster(ctx, func(context.Context, *redis.Client) error {
		mu.Lock()
		masters++
		mu.Unlock()
		return nil
	}); err != nil {
		return "", fmt.Errorf("bench: Redis Cluster: %w", err)
	}
	desc := fmt.Sprintf("external, %d masters", masters)
	if local {
		desc = fmt.Sprintf("local, %d masters + %d replicas", masters, clusterMasters*clusterReplicas)
	}
	return fmt.Sprintf("%s (%s)", infoField(info, "redis_version"), desc), nil
}

// clusterDeletePrefix deletes every key that starts with prefix on every
// master, one UNLINK per key (keys of different slots never share a
// command).
func clusterDeletePrefix(ctx context.Context, cc *redis.ClusterClient, prefix string) error {
	if prefix == "" || strings.ContainsAny(prefix, "*?[\\") {
		return fmt.Errorf("bench: refusing to delete keys matching %q", prefix)
	}
	return cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		it := node.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		var batch []string
		flush := func() error {
			if len(batch) == 0 {
				return nil
			}
			_, err := node.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, k := range batch {
					p.Unlink(ctx, k)
				}
				return nil
			})
			batch = batch[:0]
			return err
		}
		for it.Next(ctx) {
			if batch = append(batch, it.Val()); len(batch) == 1000 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if err := it.Err(); err != nil {
			return err
		}
		return flush()
	})
}

// clusterPartitions is the number of partitions of the projections on the
// Redis Cluster: each partition's keys share one hash slot, so six
// partitions spread the writes over the three masters.
const clusterPartitions = 6

// onCluster is the run's Redis Cluster, with a projection of
// clusterPartitions partitions and, as the baseline, plain cluster
// pipelines of the same writes.
func (e *env) onCluster(name, schema, stream string) projectOn {
	return projectOn{name: name, schema: schema, stream: stream, events: e.sizes.ProjectCluster, rdb: e.cluster,
		partitions: clusterPartitions,
		rawBatch: func(ctx context.Context, reg *eventstore.Registry, ns projection.Namespace, recs []eventstore.Record) error {
			return rawProjectCluster(ctx, e.cluster, reg, ns, recs, len(recs))
		},
		clean:  func(ctx context.Context, prefix string) error { return clusterDeletePrefix(ctx, e.cluster, prefix) },
		params: map[string]any{"baseline": "ClusterClient.Pipelined per batch (not transactional: one pipeline fans out to the masters)"},
	}
}

// runProjectRebuildCluster is project-rebuild on the Redis Cluster.
func runProjectRebuildCluster(ctx context.Context, e *env) ([]Result, error) {
	res, err := projectRebuild(ctx, e, e.onCluster("project-rebuild-cluster", "bench_rebuild_cluster", ""))
	if err != nil {
		return nil, err
	}
	return []Result{res}, nil
}

// runProjectLiveCluster is project-live on the Redis Cluster.
func runProjectLiveCluster(ctx context.Context, e *env) ([]Result, error) {
	res, err := projectLive(ctx, e, e.onCluster("project-live-cluster", "bench_live_cluster", "livecluster"))
	if err != nil {
		return nil, err
	}
	return []Result{res}, nil
}

// rawProjectCluster writes what the balances projection writes for recs
// into the partitions of ns, as a hand-written projector on a cluster
// would: batches of batch records, each one ClusterClient pipeline holding
// the records' writes (in their partition's keys, so in its hash slot) and
// one checkpoint write per partition the batch touched. go-redis splits the
// pipeline by master and sends the parts concurrently. A pipeline across
// slots cannot be one MULTI/EXEC, so unlike eskit's commits (one fenced
// MULTI/EXEC per partition and batch) these writes are not atomic.
func rawProjectCluster(ctx context.Context, rdb redis.UniversalClient, reg *eventstore.Registry, ns projection.Namespace, recs []eventstore.Record, batch int) error {
	last := make(map[int]eventstore.Position, max(ns.Partitions, 1))
	for i := 0; i < len(recs); i += batch {
		chunk := recs[i:min(i+batch, len(recs))]
		clear(last)
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, r := range chunk {
				ev, err := decodeDeposited(reg, r)
				if err != nil {
					return err
				}
				pns := ns.ForStream(r.StreamID)
				applyBalance(ctx, p, pns.Key, r.StreamID, ev)
				last[pns.Partition] = r.Position
			}
			for part, pos := range last {
				p.Set(ctx, ns.ForPartition(part).Key("checkpoint"), pos.String(), 0)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}
