package projection

import (
	"context"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// keys builds a projection's bookkeeping keys.
type keys struct {
	prefix, name string
	base         string
}

func newKeys(prefix, name string) keys {
	return keys{prefix: prefix, name: name, base: prefix + name}
}

func (k keys) namespace(v int64) Namespace {
	return Namespace{Prefix: k.prefix, Projection: k.name, Version: v}
}

func (k keys) active() string    { return k.base + ":active" }
func (k keys) lease() string     { return k.base + ":lease" }
func (k keys) rebuild() string   { return k.base + ":sys:rebuild" }
func (k keys) lastError() string { return k.base + ":sys:error" }

func (k keys) sys(v int64) string { return k.base + ":sys:v" + strconv.FormatInt(v, 10) }

func (k keys) checkpoint(v int64) string { return k.sys(v) + ":ckpt" }
func (k keys) parked(v int64) string     { return k.sys(v) + ":parked" }

// patterns returns the SCAN patterns that match every key of namespace v:
// its read model and its bookkeeping.
func (k keys) patterns(v int64) []string {
	return []string{
		globEscape(k.namespace(v).String()+":") + "*",
		globEscape(k.sys(v)+":") + "*",
	}
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
func deleteMatching(ctx context.Context, rdb redis.UniversalClient, patterns []string) (int, error) {
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
