package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/internal/redisconn"
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
	clusterSlots       = 16384
)

// localCluster is a Redis Cluster of redis-server processes the bench
// started; stop kills every one by PID.
type localCluster struct {
	dir   string
	nodes []*clusterNode
}

type clusterNode struct {
	port int
	proc *child
	log  string
}

func (n *clusterNode) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port)) }

// startLocalCluster starts the cluster and waits until every node agrees
// that it is healthy.
func startLocalCluster(ctx context.Context, log *slog.Logger) (_ *localCluster, err error) {
	server, err := findBinary("redis-server", "redis-server")
	if err != nil {
		return nil, err
	}
	cli, err := findBinary("redis-cli", "redis-tools")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "eskit-bench-cluster-")
	if err != nil {
		return nil, fmt.Errorf("bench: Redis Cluster: %w", err)
	}
	lc := &localCluster{dir: dir}
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
	for range clusterMasters * (1 + clusterReplicas) {
		n, err := lc.startNode(ctx, server)
		if err != nil {
			return nil, err
		}
		lc.nodes = append(lc.nodes, n)
	}
	args := append([]string{"--cluster", "create"}, lc.addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(clusterReplicas), "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("bench: redis-cli --cluster create: %w\n%s", err, out)
	}
	if err := lc.waitHealthy(ctx); err != nil {
		return nil, err
	}
	log.Info("bench: local Redis Cluster up", "masters", clusterMasters, "replicas", clusterMasters*clusterReplicas,
		"took", time.Since(began).Round(time.Millisecond), "url", lc.url())
	return lc, nil
}

func (lc *localCluster) addrs() []string {
	out := make([]string, len(lc.nodes))
	for i, n := range lc.nodes {
		out[i] = n.addr()
	}
	return out
}

// url is the cluster's redis+cluster:// URL with every node as a seed.
func (lc *localCluster) url() string {
	return redisconn.SchemeCluster + "://" + strings.Join(lc.addrs(), ",")
}

// startNode starts one cluster node on fresh ports (retrying with others
// when a port was taken meanwhile) and waits until it answers PING.
func (lc *localCluster) startNode(ctx context.Context, server string) (*clusterNode, error) {
	var lastErr error
	for range 5 {
		ports, err := freePorts(2)
		if err != nil {
			return nil, err
		}
		port, bus := ports[0], ports[1]
		dir := filepath.Join(lc.dir, strconv.Itoa(port))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("bench: Redis Cluster: %w", err)
		}
		n := &clusterNode{port: port, log: filepath.Join(dir, "redis.log")}
		cmd := exec.Command(server,
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
			"--daemonize", "no", "--logfile", n.log,
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(bus),
			"--cluster-node-timeout", strconv.FormatInt(clusterNodeTimeout.Milliseconds(), 10),
			"--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0")
		cmd.Dir = dir
		if n.proc, err = startChild("redis cluster node "+n.addr(), cmd); err != nil {
			return nil, err
		}
		lastErr = n.waitPing(ctx)
		if lastErr == nil {
			return n, nil
		}
		_ = n.proc.kill()
		logText, _ := os.ReadFile(n.log)
		if !strings.Contains(string(logText), "Address already in use") {
			return nil, fmt.Errorf("bench: %s did not come up: %w\n%s", n.proc.name, lastErr, tail(string(logText), 20))
		}
	}
	return nil, lastErr
}

// waitPing waits until the node answers PING (on a plain connection per
// try: a client's pool would log every refused dial while the node starts).
func (n *clusterNode) waitPing(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		err := probeRedis(ctx, n.addr())
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-n.proc.done:
			return fmt.Errorf("process exited (last: %w)", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// probeRedis sends one PING on a new connection and wants +PONG.
func probeRedis(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if line = strings.TrimSpace(line); line != "+PONG" {
		return fmt.Errorf("PING: %s", line)
	}
	return nil
}

// client is a direct client of the node, without retries.
func (n *clusterNode) client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: n.addr(), DialTimeout: time.Second, ReadTimeout: 2 * time.Second,
		WriteTimeout: 2 * time.Second, MaxRetries: -1, DialerRetries: 1, PoolSize: 2, DisableIdentity: true})
}

// waitHealthy waits until every node reports the cluster ok with every
// slot served, knows every node, and every replica's link to its master is
// up.
func (lc *localCluster) waitHealthy(ctx context.Context) error {
	clients := make([]*redis.Client, len(lc.nodes))
	for i, n := range lc.nodes {
		clients[i] = n.client()
		defer clients[i].Close()
	}
	check := func() error {
		for i, c := range clients {
			info, err := c.ClusterInfo(ctx).Result()
			if err != nil {
				return fmt.Errorf("%s: CLUSTER INFO: %w", lc.nodes[i].addr(), err)
			}
			f := infoFields(info)
			if f["cluster_state"] != "ok" || f["cluster_slots_ok"] != strconv.Itoa(clusterSlots) ||
				f["cluster_known_nodes"] != strconv.Itoa(len(lc.nodes)) {
				return fmt.Errorf("%s: cluster_state:%s cluster_slots_ok:%s cluster_known_nodes:%s", lc.nodes[i].addr(),
					f["cluster_state"], f["cluster_slots_ok"], f["cluster_known_nodes"])
			}
			repl, err := c.Info(ctx, "replication").Result()
			if err != nil {
				return fmt.Errorf("%s: INFO replication: %w", lc.nodes[i].addr(), err)
			}
			r := infoFields(repl)
			if r["role"] == "slave" && r["master_link_status"] != "up" {
				return fmt.Errorf("%s: replica link is %s", lc.nodes[i].addr(), r["master_link_status"])
			}
		}
		return nil
	}
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bench: the local Redis Cluster did not become healthy: %w (last: %w)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop kills every node by PID and removes the cluster's directory.
func (lc *localCluster) stop() error {
	var errs []error
	for _, n := range lc.nodes {
		if n.proc != nil {
			if err := n.proc.kill(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := os.RemoveAll(lc.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// infoFields parses the "key:value" lines of INFO and CLUSTER INFO.
func infoFields(text string) map[string]string {
	m := map[string]string{}
	for line := range strings.Lines(text) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			m[k] = v
		}
	}
	return m
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
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
		raw: func(ctx context.Context, reg *eventstore.Registry, ns projection.Namespace, recs []eventstore.Record) error {
			return rawProjectCluster(ctx, e.cluster, reg, ns, recs, projection.DefaultBatchSize)
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
				v, err := reg.Decode(r)
				if err != nil {
					return err
				}
				ev, ok := v.(deposited)
				if !ok {
					return fmt.Errorf("unexpected event %T", v)
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
