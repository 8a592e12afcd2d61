package projection

import (
	"context"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// keys builds a projection's keys. The layout (P partitions, namespace
// version V, partition p):
//
//	<prefix>_eskit:projections       hash: projection name -> its stored configuration
//	<prefix>{N}:meta                 hash: partitions, active version, first build, rebuild, lost partitions
//	<prefix>{N}:error                hash: the last error and its time
//	<prefix>{N}:runners              sorted set: runners serving N, scored by presence expiry
//	<prefix>lease:{N:p}              the lease of partition p (lease/redislease: holder, token, expiry)
//	<prefix>{N:p}:ctl                control requests for that runner (and :ctl:<id> replies)
//	<prefix>{N:p}:v<V>:ckpt          checkpoint of partition p in namespace V
//	<prefix>{N:p}:v<V>:streams       last applied version of every stream of partition p
//	<prefix>{N:p}:v<V>:parked        parked records of partition p
//	<prefix>{N:p}:v<V>:m:<parts...>  the read model (Namespace.Key)
//
// Every key of one (projection, partition) carries the hash tag {N:p}, so
// a batch's writes, its checkpoint and the lease it is fenced by are in
// one Redis Cluster slot, and partitions spread over the masters.
type keys struct {
	prefix, name string
	global       string // <prefix>{N}
}

func newKeys(prefix, name string) keys {
	return keys{prefix: prefix, name: name, global: prefix + "{" + name + "}"}
}

func registryKey(prefix string) string { return prefix + "_eskit:projections" }

func (k keys) meta() string      { return k.global + ":meta" }
func (k keys) lastError() string { return k.global + ":error" }
func (k keys) runners() string   { return k.global + ":runners" }

// part returns the key stem of partition p: <prefix>{N:p}.
func (k keys) part(p int) string {
	return k.prefix + "{" + k.name + ":" + strconv.Itoa(p) + "}"
}

func (k keys) control(p int) string          { return k.part(p) + ":ctl" }
func (k keys) reply(p int, id string) string { return k.part(p) + ":ctl:" + id }

func (k keys) version(p int, v int64) string {
	return k.part(p) + ":v" + strconv.FormatInt(v, 10)
}

func (k keys) checkpoint(p int, v int64) string { return k.version(p, v) + ":ckpt" }
func (k keys) streams(p int, v int64) string    { return k.version(p, v) + ":streams" }
func (k keys) parked(p int, v int64) string     { return k.version(p, v) + ":parked" }

func (k keys) namespace(v int64, p, partitions int) Namespace {
	return Namespace{Prefix: k.prefix, Projection: k.name, Version: v, Partition: p, Partitions: partitions}
}

// versionPattern matches every key of namespace v in partition p: its read
// model and its bookkeeping.
func (k keys) versionPattern(p int, v int64) string {
	return globEscape(k.version(p, v)+":") + "*"
}

// allVersionsPattern matches every versioned key of partition p.
func (k keys) allVersionsPattern(p int) string {
	return globEscape(k.part(p)+":v") + "*"
}

// globEscape escapes the characters SCAN MATCH treats specially.
func globEscape(s string) string {
	if !strings.ContainsAny(s, `*?[]\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// deleteChunk is how many keys one pipeline of UNLINKs removes.
const deleteChunk = 500

// deleteMatching removes every key matching one of the patterns with SCAN
// and UNLINK in chunks, on every master of a cluster.
func deleteMatching(ctx context.Context, rdb redis.UniversalClient, patterns ...string) (int, error) {
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		var mu sync.Mutex
		total := 0
		err := cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			n, err := deleteOnNode(ctx, node, patterns)
			mu.Lock()
			total += n
			mu.Unlock()
			return err
		})
		return total, err
	}
	return deleteOnNode(ctx, rdb, patterns)
}

// deleteOnNode scans one node. Each key gets its own UNLINK (pipelined), so
// keys of different cluster slots never meet in one command.
func deleteOnNode(ctx context.Context, c redis.Cmdable, patterns []string) (int, error) {
	total := 0
	flush := func(batch []string) error {
		if len(batch) == 0 {
			return nil
		}
		_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range batch {
				p.Unlink(ctx, k)
			}
			return nil
		})
		total += len(batch)
		return err
	}
	for _, pat := range patterns {
		var cursor uint64
		batch := make([]string, 0, deleteChunk)
		for {
			ks, next, err := c.Scan(ctx, cursor, pat, 1000).Result()
			if err != nil {
				return total, err
			}
			for _, key := range ks {
				batch = append(batch, key)
				if len(batch) == deleteChunk {
					if err := flush(batch); err != nil {
						return total, err
					}
					batch = batch[:0]
				}
			}
			cursor = next
			if cursor == 0 {
				break
			}
		}
		if err := flush(batch); err != nil {
			return total, err
		}
	}
	return total, nil
}

func fnv32(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}
