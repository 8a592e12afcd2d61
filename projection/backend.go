package projection

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/lease"
	"github.com/eskit/eskit/lease/redislease"
)

// backend is where a runner keeps a projection's coordination state: the
// registry of projections, each projection's meta (partition count,
// active version, first build, rebuild, lost partitions), its last error
// and the presence of its runners. The runner's machinery (sources,
// partitions and leases, verification, parking, rebuilds, status) works
// on it alone, so a read-model store other than Redis plugs in beside
// redisBackend. Implementations are safe for concurrent use.
type backend interface {
	// register records the projection with its partition count in the
	// registry, and creates its meta when missing; it fails with a
	// *ConfigError when a count is stored already and differs.
	register(ctx context.Context, name string, partitions int) error
	// readMeta returns the projection's meta (exists false when it has
	// none).
	readMeta(ctx context.Context, name string) (meta, error)
	// beginBuild fixes the first build's version and the end of its
	// history, unless a runner fixed them already (the stored ones stay).
	beginBuild(ctx context.Context, name string, version int64, until string) error
	// markLost and clearLost record a partition of the active version that
	// lost its data and is rebuilt in place, and its end.
	markLost(ctx context.Context, name string, p int, v int64) error
	clearLost(ctx context.Context, name string, p int) error
	// switchTo makes version v active when the meta still builds it
	// (field "building": the first build, "rebuild": a blue/green
	// rebuild); it reports whether it switched.
	switchTo(ctx context.Context, name string, v int64, field string) (bool, error)
	// startRebuild marks a rebuild of version active+1 and returns it; 0
	// when there is no active version yet, -N when version N is being
	// rebuilt already.
	startRebuild(ctx context.Context, name string) (int64, error)
	// cancelRebuild removes the rebuild mark if it still names v.
	cancelRebuild(ctx context.Context, name string, v int64) error
	// projections lists the registered projections, sorted.
	projections(ctx context.Context) ([]string, error)

	// recordError keeps msg as the projection's last error, at at;
	// clearErrorBefore forgets it when it happened before t.
	recordError(ctx context.Context, name, msg string, at time.Time) error
	clearErrorBefore(ctx context.Context, name string, t time.Time) error

	// presence records runner as serving each of names until ttl from
	// now, and returns how many live runners each has (at least 1);
	// leave removes it.
	presence(ctx context.Context, runner string, names []string, ttl time.Duration) ([]int, error)
	leave(ctx context.Context, runner string, names []string) error

	// Control requests to the runner that holds a partition: sendControl
	// queues req, takeControl takes the oldest queued request (false when
	// none), answerControl stores the reply to request id, awaitReply
	// waits up to wait for it (false when none came), and withdrawControl
	// takes req back if no runner took it (false when one did).
	sendControl(ctx context.Context, name string, p int, req []byte) error
	takeControl(ctx context.Context, name string, p int) ([]byte, bool, error)
	answerControl(ctx context.Context, name string, p int, id string, reply []byte) error
	awaitReply(ctx context.Context, name string, p int, id string, wait time.Duration) ([]byte, bool, error)
	withdrawControl(ctx context.Context, name string, p int, req []byte) (bool, error)

	// State of partition p in namespace version v.
	readCheckpoint(ctx context.Context, name string, p int, v int64) (checkpoint, error)
	readParked(ctx context.Context, name string, p int, v int64) ([]ParkedRecord, error)
	// readVersions fills each ask's versions: the last applied (or
	// parked) version of each of its streams in partition p, 0 when none.
	readVersions(ctx context.Context, name string, p int, asks []*versionsAsk) error
	// versionReady reports whether every partition of version v has
	// replayed its history (its checkpoint is marked ready).
	versionReady(ctx context.Context, name string, partitions int, v int64) (bool, error)
	// metaAndSeq returns the meta and, unless v is 0, the commit counter
	// stored in partition p's checkpoint of v ("" when none), in one read.
	metaAndSeq(ctx context.Context, name string, p int, v int64) (meta, string, error)
	// deleteVersion deletes partition p's read model and bookkeeping of
	// version v (and returns how many items it deleted); deleteVersions
	// those of every version.
	deleteVersion(ctx context.Context, name string, p int, v int64) (int, error)
	deleteVersions(ctx context.Context, name string, p int) error
	// partStatus reads, for every partition, its checkpoint of version
	// active (when not 0) and of version building (when not 0), its
	// parked count in active, and the projection's last error.
	partStatus(ctx context.Context, name string, partitions int, active, building int64) ([]storedPart, storedError, error)

	// leaseStore keeps the partitions' leases (lease names: leaseName);
	// the commits of a partition are fenced by its lease in the same
	// store. currentLeases reads the live lease of each of the
	// projection's partitions ps, in one round trip where it can.
	leaseStore() lease.Store
	currentLeases(ctx context.Context, name string, ps []int) ([]liveLease, error)

	// cachesVersions reports whether the runner may keep the stream
	// versions it applied between batches (false when another writer
	// applies records to the serving namespace: an Inline).
	cachesVersions() bool
	// begin starts a commit of partition pt's writes to the namespaces of
	// sts (see txn). careful asks for every record's writes to be sent and
	// checked on their own, so that a failing one is told apart from the
	// others (a target that cannot undo one record's writes otherwise asks
	// for it with errRedoCarefully).
	begin(ctx context.Context, pt *part, sts []*nsState, careful bool) (txn, error)
}

// liveLease is a partition's live lease (ok false when none).
type liveLease struct {
	lease.Lease
	ok bool
}

// versionsAsk is a read of stream versions of one namespace version.
type versionsAsk struct {
	v        int64
	streams  []string
	versions []int64 // set by readVersions, one per stream
}

// storedPart is what partStatus reads of one partition.
type storedPart struct {
	ckpt, build *checkpoint // nil when not read
	parked      int
}

// storedError is a projection's last error as stored ("" when none).
type storedError struct {
	msg string
	at  time.Time
}

// redisBackend keeps the coordination state in Redis, under the key
// layout of keys.go.
type redisBackend struct {
	rdb    redis.UniversalClient
	prefix string
	leases *redislease.Store // nil when the prefix can hold no lease (a Reader's, with braces)

	switchScript, startRebuildScript, cancelRebuildScript, clearErrorScript *redis.Script
}

var _ backend = (*redisBackend)(nil)

func newRedisBackend(rdb redis.UniversalClient, prefix string) *redisBackend {
	// redislease refuses only prefixes with braces, which no runner's
	// prefix holds (ValidatePrefix): a Reader of such a prefix finds no
	// lease.
	leases, _ := redislease.New(rdb, redislease.WithPrefix(prefix))
	return &redisBackend{
		rdb: rdb, prefix: prefix, leases: leases,
		switchScript:        redis.NewScript(switchLua),
		startRebuildScript:  redis.NewScript(startRebuildLua),
		cancelRebuildScript: redis.NewScript(cancelRebuildLua),
		clearErrorScript:    redis.NewScript(clearErrorLua),
	}
}

func (b *redisBackend) keys(name string) keys { return newKeys(b.prefix, name) }

func (b *redisBackend) cachesVersions() bool { return true }

func (b *redisBackend) register(ctx context.Context, name string, partitions int) error {
	reg, metaKey := registryKey(b.prefix), b.keys(name).meta()
	return registerSteps(name, partitions,
		func(cfg string) (string, error) {
			if err := b.rdb.HSetNX(ctx, reg, name, cfg).Err(); err != nil {
				return "", err
			}
			return b.rdb.HGet(ctx, reg, name).Result()
		},
		func() error { return b.rdb.HSetNX(ctx, metaKey, "partitions", partitions).Err() },
		func() (meta, error) { return b.readMeta(ctx, name) })
}

// registerSteps is register on a backend's primitives: putConfig stores
// the configuration unless one is stored and returns the stored one,
// initMeta creates the meta's partition count unless set, readMeta reads
// the meta.
func registerSteps(name string, partitions int,
	putConfig func(cfg string) (string, error), initMeta func() error, readMeta func() (meta, error)) error {
	cfg, _ := json.Marshal(storedConfig{Partitions: partitions})
	raw, err := putConfig(string(cfg))
	if err != nil {
		return fmt.Errorf("projection %q: register: %w", name, err)
	}
	var stored storedConfig
	if err := json.Unmarshal([]byte(raw), &stored); err != nil {
		return fmt.Errorf("projection %q: stored configuration %q: %w", name, raw, err)
	}
	if stored.Partitions != partitions {
		return &ConfigError{Projection: name, Stored: stored.Partitions, Configured: partitions}
	}
	if err := initMeta(); err != nil {
		return fmt.Errorf("projection %q: init meta: %w", name, err)
	}
	m, err := readMeta()
	if err != nil {
		return err
	}
	if m.partitions != partitions {
		return &ConfigError{Projection: name, Stored: m.partitions, Configured: partitions}
	}
	return nil
}

func (b *redisBackend) readMeta(ctx context.Context, name string) (meta, error) {
	return readMeta(ctx, b.rdb, b.keys(name))
}

func (b *redisBackend) beginBuild(ctx context.Context, name string, version int64, until string) error {
	k := b.keys(name)
	if err := b.rdb.HSetNX(ctx, k.meta(), "building", version).Err(); err != nil {
		return fmt.Errorf("projection %q: first build: %w", name, err)
	}
	if err := b.rdb.HSetNX(ctx, k.meta(), "until", until).Err(); err != nil {
		return fmt.Errorf("projection %q: first build: record its end: %w", name, err)
	}
	return nil
}

func (b *redisBackend) markLost(ctx context.Context, name string, p int, v int64) error {
	if err := b.rdb.HSet(ctx, b.keys(name).meta(), lostField+strconv.Itoa(p), v).Err(); err != nil {
		return fmt.Errorf("projection %q: mark partition %d lost: %w", name, p, err)
	}
	return nil
}

func (b *redisBackend) clearLost(ctx context.Context, name string, p int) error {
	if err := b.rdb.HDel(ctx, b.keys(name).meta(), lostField+strconv.Itoa(p)).Err(); err != nil {
		return fmt.Errorf("projection %q: partition %d rebuilt: %w", name, p, err)
	}
	return nil
}

func (b *redisBackend) switchTo(ctx context.Context, name string, v int64, field string) (bool, error) {
	n, err := b.switchScript.Run(ctx, b.rdb, []string{b.keys(name).meta()}, v, field).Int()
	if err != nil {
		return false, fmt.Errorf("projection %q: switch to v%d: %w", name, v, err)
	}
	return n == 1, nil
}

func (b *redisBackend) startRebuild(ctx context.Context, name string) (int64, error) {
	v, err := b.startRebuildScript.Run(ctx, b.rdb, []string{b.keys(name).meta()}).Int64()
	if err != nil {
		return 0, fmt.Errorf("projection %q: start rebuild: %w", name, err)
	}
	return v, nil
}

func (b *redisBackend) cancelRebuild(ctx context.Context, name string, v int64) error {
	return b.cancelRebuildScript.Run(ctx, b.rdb, []string{b.keys(name).meta()}, v).Err()
}

func (b *redisBackend) projections(ctx context.Context) ([]string, error) {
	names, err := b.rdb.HKeys(ctx, registryKey(b.prefix)).Result()
	if err != nil {
		return nil, fmt.Errorf("projection: list projections: %w", err)
	}
	slices.Sort(names)
	return names, nil
}

func (b *redisBackend) recordError(ctx context.Context, name, msg string, at time.Time) error {
	return b.rdb.HSet(ctx, b.keys(name).lastError(), "msg", msg, "at", strconv.FormatInt(at.UnixNano(), 10)).Err()
}

func (b *redisBackend) clearErrorBefore(ctx context.Context, name string, t time.Time) error {
	return b.clearErrorScript.Run(ctx, b.rdb, []string{b.keys(name).lastError()}, t.UnixNano()).Err()
}

func (b *redisBackend) presence(ctx context.Context, runner string, names []string, ttl time.Duration) ([]int, error) {
	now := time.Now()
	expiry := float64(now.Add(ttl).UnixMilli())
	pipe := b.rdb.Pipeline()
	counts := make([]*redis.IntCmd, len(names))
	for i, name := range names {
		key := b.keys(name).runners()
		pipe.ZAdd(ctx, key, redis.Z{Score: expiry, Member: runner})
		pipe.ZRemRangeByScore(ctx, key, "-inf", strconv.FormatInt(now.UnixMilli(), 10))
		pipe.PExpire(ctx, key, 10*ttl)
		counts[i] = pipe.ZCard(ctx, key)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, err
	}
	out := make([]int, len(counts))
	for i, c := range counts {
		out[i] = max(int(c.Val()), 1)
	}
	return out, nil
}

func (b *redisBackend) leave(ctx context.Context, runner string, names []string) error {
	pipe := b.rdb.Pipeline()
	for _, name := range names {
		pipe.ZRem(ctx, b.keys(name).runners(), runner)
	}
	_, err := pipe.Exec(ctx)
	return err
}

func (b *redisBackend) sendControl(ctx context.Context, name string, p int, req []byte) error {
	k := b.keys(name)
	_, err := b.rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.LPush(ctx, k.control(p), req)
		pipe.Expire(ctx, k.control(p), controlTTL)
		return nil
	})
	return err
}

func (b *redisBackend) takeControl(ctx context.Context, name string, p int) ([]byte, bool, error) {
	raw, err := b.rdb.RPop(ctx, b.keys(name).control(p)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	return raw, err == nil, err
}

func (b *redisBackend) answerControl(ctx context.Context, name string, p int, id string, reply []byte) error {
	key := b.keys(name).reply(p, id)
	_, err := b.rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.LPush(ctx, key, reply)
		pipe.Expire(ctx, key, controlTTL)
		return nil
	})
	return err
}

func (b *redisBackend) awaitReply(ctx context.Context, name string, p int, id string, wait time.Duration) ([]byte, bool, error) {
	res, err := b.rdb.BRPop(ctx, wait, b.keys(name).reply(p, id)).Result()
	switch {
	case err == nil:
		return []byte(res[1]), true, nil
	case errors.Is(err, redis.Nil):
		return nil, false, nil
	}
	return nil, false, err
}

func (b *redisBackend) withdrawControl(ctx context.Context, name string, p int, req []byte) (bool, error) {
	n, err := b.rdb.LRem(ctx, b.keys(name).control(p), 1, req).Result()
	return n > 0, err
}

func (b *redisBackend) readCheckpoint(ctx context.Context, name string, p int, v int64) (checkpoint, error) {
	return readCheckpoint(ctx, b.rdb, b.keys(name), p, v)
}

func (b *redisBackend) readParked(ctx context.Context, name string, p int, v int64) ([]ParkedRecord, error) {
	return readParked(ctx, b.rdb, b.keys(name), p, v)
}

func (b *redisBackend) readVersions(ctx context.Context, name string, p int, asks []*versionsAsk) error {
	k := b.keys(name)
	pipe := b.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(asks))
	for i, a := range asks {
		cmds[i] = pipe.HMGet(ctx, k.streams(p, a.v), a.streams...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("projection %q: read stream versions: %w", name, err)
	}
	for i, a := range asks {
		a.versions = make([]int64, len(a.streams))
		for j, v := range cmds[i].Val() {
			if s, ok := v.(string); ok {
				n, err := strconv.ParseInt(s, 10, 64)
				if err != nil {
					return fmt.Errorf("projection %q: stored version of %q: %q", name, a.streams[j], s)
				}
				a.versions[j] = n
			}
		}
	}
	return nil
}

func (b *redisBackend) versionReady(ctx context.Context, name string, partitions int, v int64) (bool, error) {
	k := b.keys(name)
	pipe := b.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, partitions)
	for p := range partitions {
		cmds[p] = pipe.HGet(ctx, k.checkpoint(p, v), readyField)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return false, fmt.Errorf("projection %q: read readiness of v%d: %w", name, v, err)
	}
	for _, c := range cmds {
		if c.Val() != "1" {
			return false, nil
		}
	}
	return true, nil
}

func (b *redisBackend) metaAndSeq(ctx context.Context, name string, p int, v int64) (meta, string, error) {
	k := b.keys(name)
	pipe := b.rdb.Pipeline()
	metaCmd := pipe.HGetAll(ctx, k.meta())
	var seqCmd *redis.StringCmd
	if v != 0 {
		seqCmd = pipe.HGet(ctx, k.checkpoint(p, v), "seq")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return meta{}, "", fmt.Errorf("projection %q: read meta: %w", name, err)
	}
	m, err := parseMeta(name, metaCmd.Val())
	if err != nil {
		return meta{}, "", err
	}
	seq := ""
	if seqCmd != nil {
		seq = seqCmd.Val()
	}
	return m, seq, nil
}

func (b *redisBackend) deleteVersion(ctx context.Context, name string, p int, v int64) (int, error) {
	n, err := deleteMatching(ctx, b.rdb, b.keys(name).versionPattern(p, v))
	if err != nil {
		return n, fmt.Errorf("projection %q: delete v%d of partition %d: %w", name, v, p, err)
	}
	return n, nil
}

func (b *redisBackend) deleteVersions(ctx context.Context, name string, p int) error {
	if _, err := deleteMatching(ctx, b.rdb, b.keys(name).allVersionsPattern(p)); err != nil {
		return fmt.Errorf("projection %q: clear partition %d: %w", name, p, err)
	}
	return nil
}

func (b *redisBackend) partStatus(ctx context.Context, name string, partitions int, active, building int64) ([]storedPart, storedError, error) {
	k := b.keys(name)
	pipe := b.rdb.Pipeline()
	type cmds struct {
		ckpt, build *redis.MapStringStringCmd
		parked      *redis.IntCmd
	}
	cs := make([]cmds, partitions)
	for p := range partitions {
		if active != 0 {
			cs[p].ckpt = pipe.HGetAll(ctx, k.checkpoint(p, active))
			cs[p].parked = pipe.HLen(ctx, k.parked(p, active))
		}
		if building != 0 {
			cs[p].build = pipe.HGetAll(ctx, k.checkpoint(p, building))
		}
	}
	lastErr := pipe.HMGet(ctx, k.lastError(), "msg", "at")
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, storedError{}, fmt.Errorf("projection %q: read status: %w", name, err)
	}
	out := make([]storedPart, partitions)
	for p := range partitions {
		if cs[p].ckpt != nil {
			c, err := parseCheckpoint(name, cs[p].ckpt.Val())
			if err != nil {
				return nil, storedError{}, err
			}
			out[p].ckpt, out[p].parked = &c, int(cs[p].parked.Val())
		}
		if cs[p].build != nil {
			c, err := parseCheckpoint(name, cs[p].build.Val())
			if err != nil {
				return nil, storedError{}, err
			}
			out[p].build = &c
		}
	}
	var se storedError
	if vals := lastErr.Val(); len(vals) == 2 {
		if s, ok := vals[0].(string); ok {
			se.msg = s
		}
		if s, ok := vals[1].(string); ok {
			if ns, err := strconv.ParseInt(s, 10, 64); err == nil {
				se.at = time.Unix(0, ns).UTC()
			}
		}
	}
	return out, se, nil
}

func (b *redisBackend) leaseStore() lease.Store { return b.leases }

func (b *redisBackend) currentLeases(ctx context.Context, name string, ps []int) ([]liveLease, error) {
	out := make([]liveLease, len(ps))
	if b.leases == nil || len(ps) == 0 {
		return out, nil
	}
	pipe := b.rdb.Pipeline()
	cmds := make([]*redislease.CurrentCmd, len(ps))
	for i, p := range ps {
		cmds[i] = b.leases.QueueCurrent(ctx, pipe, leaseName(name, p))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("projection %q: read leases: %w", name, err)
	}
	for i, c := range cmds {
		l, ok, err := c.Result()
		if err != nil {
			return nil, fmt.Errorf("projection %q: read leases: %w", name, err)
		}
		out[i] = liveLease{Lease: l, ok: ok}
	}
	return out, nil
}
