package projection

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/lease"
)

// Postgres returns the PostgreSQL target on pool: the runners'
// bookkeeping lives in schema's projection tables (created by
// pgstore.Migrate, migration 4; the leases are the schema's lease table),
// and each namespace version of a read model in a schema of its own
// (Namespace.Schema), whose tables the projection creates (PostgresSetup).
// A batch's writes, its stream versions, parked records and checkpoint
// commit in one transaction, fenced by the partition's lease in the same
// database: exactly once by construction. The database may be the event
// store's or another one (migrated with pgstore.Migrate as well).
func Postgres(pool *pgxpool.Pool, schema string, opts ...PostgresOption) Target {
	t := pgTarget{pool: pool, schema: schema}
	for _, o := range opts {
		o(&t)
	}
	return t
}

// PostgresOption configures the PostgreSQL target.
type PostgresOption func(*pgTarget)

// SharedWithInline tells the runners on the target that an Inline applies
// the same projections in the appends' transactions: they then read the
// stream versions of the serving namespace afresh for every batch, and
// check, when committing, that no Inline applied one of its records
// meanwhile (the batch is then applied again), instead of trusting the
// versions they applied last.
func SharedWithInline() PostgresOption { return func(t *pgTarget) { t.inline = true } }

type pgTarget struct {
	pool   *pgxpool.Pool
	schema string
	inline bool
}

func (t pgTarget) backend(prefix string) (backend, error) {
	if t.pool == nil {
		return nil, errors.New("projection: the PostgreSQL target has no pool")
	}
	if t.schema == "" {
		return nil, errors.New("projection: the PostgreSQL target has no schema")
	}
	q := func(table string) string { return pgx.Identifier{t.schema, table}.Sanitize() }
	return &pgBackend{
		pool: t.pool, prefix: prefix,
		state: q("projection_state"), runners: q("projection_runners"), control: q("projection_control"),
		leases: pgstore.NewLeases(t.pool, t.schema),
		inline: t.inline,
	}, nil
}

// pgBackend keeps the runners' state in PostgreSQL: field/value records by
// the keys of keys.go, as the Redis backend keeps hashes.
type pgBackend struct {
	pool                    *pgxpool.Pool
	prefix                  string
	state, runners, control string
	leases                  *pgstore.Leases
	inline                  bool // an Inline writes the serving namespaces too

	mu    sync.Mutex
	projs map[string]Projection // the runner's projections (nil for a Reader)
}

var _ backend = (*pgBackend)(nil)

// configure checks that the projections can live in PostgreSQL.
func (b *pgBackend) configure(projs []Projection) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.projs = map[string]Projection{}
	for _, p := range projs {
		if setupOf(p) == nil {
			return fmt.Errorf("projection %q: a projection on the PostgreSQL target needs a Setup (projection.Setup or PostgresSetup) to create its tables", p.Name())
		}
		if partitionsOf(p) > 1 && clearOf(p) == nil {
			return fmt.Errorf("projection %q: a partitioned projection on the PostgreSQL target needs a Clear (projection.Clear or PostgresClear)", p.Name())
		}
		b.projs[p.Name()] = p
	}
	return nil
}

func (b *pgBackend) keys(name string) keys { return newKeys(b.prefix, name) }

// querier is a pool or a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func (b *pgBackend) hgetall(ctx context.Context, q querier, k string) (map[string]string, error) {
	rows, err := q.Query(ctx, `SELECT f, v FROM `+b.state+` WHERE k = $1`, k)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	var f, v string
	_, err = pgx.ForEachRow(rows, []any{&f, &v}, func() error {
		out[f] = v
		return nil
	})
	return out, err
}

func (b *pgBackend) hget(ctx context.Context, q querier, k, f string) (string, bool, error) {
	var v string
	err := q.QueryRow(ctx, `SELECT v FROM `+b.state+` WHERE k = $1 AND f = $2`, k, f).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	return v, err == nil, err
}

func (b *pgBackend) hsetnx(ctx context.Context, q querier, k, f, v string) error {
	_, err := q.Exec(ctx, `INSERT INTO `+b.state+` (k, f, v) VALUES ($1, $2, $3) ON CONFLICT (k, f) DO NOTHING`, k, f, v)
	return err
}

// hsetSQL upserts the fields $2 with the values $3 of key $1.
func (b *pgBackend) hsetSQL() string {
	return `INSERT INTO ` + b.state + ` (k, f, v) SELECT $1, f, v FROM unnest($2::text[], $3::text[]) AS u(f, v)
		ON CONFLICT (k, f) DO UPDATE SET v = EXCLUDED.v`
}

func (b *pgBackend) hset(ctx context.Context, q querier, k string, fields, values []string) error {
	_, err := q.Exec(ctx, b.hsetSQL(), k, fields, values)
	return err
}

func (b *pgBackend) hdel(ctx context.Context, q querier, k string, fields ...string) error {
	_, err := q.Exec(ctx, `DELETE FROM `+b.state+` WHERE k = $1 AND f = ANY($2)`, k, fields)
	return err
}

func (b *pgBackend) register(ctx context.Context, name string, partitions int) error {
	reg := registryKey(b.prefix)
	return registerSteps(name, partitions,
		func(cfg string) (string, error) {
			if err := b.hsetnx(ctx, b.pool, reg, name, cfg); err != nil {
				return "", err
			}
			raw, _, err := b.hget(ctx, b.pool, reg, name)
			return raw, err
		},
		func() error {
			return b.hsetnx(ctx, b.pool, b.keys(name).meta(), "partitions", strconv.Itoa(partitions))
		},
		func() (meta, error) { return b.readMeta(ctx, name) })
}

func (b *pgBackend) cachesVersions() bool { return !b.inline }

func (b *pgBackend) readMeta(ctx context.Context, name string) (meta, error) {
	return b.readMetaQ(ctx, b.pool, name)
}

// readMetaQ reads the meta through q (a pool, or a transaction).
func (b *pgBackend) readMetaQ(ctx context.Context, q querier, name string) (meta, error) {
	vals, err := b.hgetall(ctx, q, b.keys(name).meta())
	if err != nil {
		return meta{}, fmt.Errorf("projection %q: read meta: %w", name, err)
	}
	return parseMeta(name, vals)
}

func (b *pgBackend) beginBuild(ctx context.Context, name string, version int64, until string) error {
	k := b.keys(name).meta()
	if err := b.hsetnx(ctx, b.pool, k, "building", strconv.FormatInt(version, 10)); err != nil {
		return fmt.Errorf("projection %q: first build: %w", name, err)
	}
	if err := b.hsetnx(ctx, b.pool, k, "until", until); err != nil {
		return fmt.Errorf("projection %q: first build: record its end: %w", name, err)
	}
	return nil
}

func (b *pgBackend) markLost(ctx context.Context, name string, p int, v int64) error {
	if err := b.hset(ctx, b.pool, b.keys(name).meta(), []string{lostField + strconv.Itoa(p)}, []string{strconv.FormatInt(v, 10)}); err != nil {
		return fmt.Errorf("projection %q: mark partition %d lost: %w", name, p, err)
	}
	return nil
}

func (b *pgBackend) clearLost(ctx context.Context, name string, p int) error {
	if err := b.hdel(ctx, b.pool, b.keys(name).meta(), lostField+strconv.Itoa(p)); err != nil {
		return fmt.Errorf("projection %q: partition %d rebuilt: %w", name, p, err)
	}
	return nil
}

// metaTx runs fn in a transaction holding the projection's meta lock (an
// advisory transaction lock on the meta key): the meta's
// read-modify-writes are atomic, as Redis scripts are.
func (b *pgBackend) metaTx(ctx context.Context, name string, fn func(tx pgx.Tx, k string) error) error {
	k := b.keys(name).meta()
	return pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, k); err != nil {
			return err
		}
		return fn(tx, k)
	})
}

func (b *pgBackend) switchTo(ctx context.Context, name string, v int64, field string) (bool, error) {
	switched := false
	err := b.metaTx(ctx, name, func(tx pgx.Tx, k string) error {
		cur, _, err := b.hget(ctx, tx, k, field)
		if err != nil || cur != strconv.FormatInt(v, 10) {
			return err
		}
		if err := b.hset(ctx, tx, k, []string{"active"}, []string{cur}); err != nil {
			return err
		}
		drop := []string{field}
		if field == "building" {
			drop = append(drop, "until")
		}
		switched = true
		return b.hdel(ctx, tx, k, drop...)
	})
	if err != nil {
		return false, fmt.Errorf("projection %q: switch to v%d: %w", name, v, err)
	}
	return switched, nil
}

func (b *pgBackend) startRebuild(ctx context.Context, name string) (int64, error) {
	var out int64
	err := b.metaTx(ctx, name, func(tx pgx.Tx, k string) error {
		vals, err := b.hgetall(ctx, tx, k)
		if err != nil {
			return err
		}
		active, _ := strconv.ParseInt(vals["active"], 10, 64)
		if active == 0 {
			return nil
		}
		if cur, ok := vals["rebuild"]; ok {
			n, _ := strconv.ParseInt(cur, 10, 64)
			out = -n
			return nil
		}
		out = active + 1
		return b.hset(ctx, tx, k, []string{"rebuild"}, []string{strconv.FormatInt(out, 10)})
	})
	if err != nil {
		return 0, fmt.Errorf("projection %q: start rebuild: %w", name, err)
	}
	return out, nil
}

func (b *pgBackend) cancelRebuild(ctx context.Context, name string, v int64) error {
	_, err := b.pool.Exec(ctx, `DELETE FROM `+b.state+` WHERE k = $1 AND f = 'rebuild' AND v = $2`, b.keys(name).meta(), strconv.FormatInt(v, 10))
	return err
}

func (b *pgBackend) projections(ctx context.Context) ([]string, error) {
	vals, err := b.hgetall(ctx, b.pool, registryKey(b.prefix))
	if err != nil {
		return nil, fmt.Errorf("projection: list projections: %w", err)
	}
	names := make([]string, 0, len(vals))
	for n := range vals {
		names = append(names, n)
	}
	slices.Sort(names)
	return names, nil
}

func (b *pgBackend) recordError(ctx context.Context, name, msg string, at time.Time) error {
	return b.hset(ctx, b.pool, b.keys(name).lastError(), []string{"msg", "at"}, []string{msg, strconv.FormatInt(at.UnixNano(), 10)})
}

func (b *pgBackend) clearErrorBefore(ctx context.Context, name string, t time.Time) error {
	_, err := b.pool.Exec(ctx, `DELETE FROM `+b.state+` WHERE k = $1 AND EXISTS (
		SELECT 1 FROM `+b.state+` WHERE k = $1 AND f = 'at' AND v::bigint < $2)`, b.keys(name).lastError(), t.UnixNano())
	return err
}

func (b *pgBackend) presence(ctx context.Context, runner string, names []string, ttl time.Duration) ([]int, error) {
	ks := make([]string, len(names))
	for i, n := range names {
		ks[i] = b.keys(n).runners()
	}
	batch := &pgx.Batch{}
	batch.Queue(`INSERT INTO `+b.runners+` (k, runner, expires_at) SELECT k, $2, clock_timestamp() + $3 * interval '1 microsecond' FROM unnest($1::text[]) AS u(k)
		ON CONFLICT (k, runner) DO UPDATE SET expires_at = EXCLUDED.expires_at`, ks, runner, ttl.Microseconds())
	batch.Queue(`DELETE FROM `+b.runners+` WHERE k = ANY($1) AND expires_at < clock_timestamp()`, ks)
	counts := map[string]int{}
	batch.Queue(`SELECT k, count(*) FROM `+b.runners+` WHERE k = ANY($1) GROUP BY k`, ks).Query(func(rows pgx.Rows) error {
		var k string
		var n int
		_, err := pgx.ForEachRow(rows, []any{&k, &n}, func() error {
			counts[k] = n
			return nil
		})
		return err
	})
	if err := b.pool.SendBatch(ctx, batch).Close(); err != nil {
		return nil, err
	}
	out := make([]int, len(ks))
	for i, k := range ks {
		out[i] = max(counts[k], 1)
	}
	return out, nil
}

func (b *pgBackend) leave(ctx context.Context, runner string, names []string) error {
	ks := make([]string, len(names))
	for i, n := range names {
		ks[i] = b.keys(n).runners()
	}
	_, err := b.pool.Exec(ctx, `DELETE FROM `+b.runners+` WHERE k = ANY($1) AND runner = $2`, ks, runner)
	return err
}

func (b *pgBackend) sendControl(ctx context.Context, name string, p int, req []byte) error {
	_, err := b.pool.Exec(ctx, `WITH old AS (DELETE FROM `+b.control+` WHERE created_at < now() - $3 * interval '1 second')
		INSERT INTO `+b.control+` (k, body) VALUES ($1, $2)`, b.keys(name).control(p), req, int64(controlTTL.Seconds()))
	return err
}

// popSQL takes the oldest row of key $1.
func (b *pgBackend) popSQL() string {
	return `DELETE FROM ` + b.control + ` WHERE seq = (SELECT seq FROM ` + b.control + ` WHERE k = $1 ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING body`
}

func (b *pgBackend) takeControl(ctx context.Context, name string, p int) ([]byte, bool, error) {
	var body []byte
	err := b.pool.QueryRow(ctx, b.popSQL(), b.keys(name).control(p)).Scan(&body)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	return body, err == nil, err
}

func (b *pgBackend) answerControl(ctx context.Context, name string, p int, id string, reply []byte) error {
	_, err := b.pool.Exec(ctx, `INSERT INTO `+b.control+` (k, body) VALUES ($1, $2)`, b.keys(name).reply(p, id), reply)
	return err
}

func (b *pgBackend) awaitReply(ctx context.Context, name string, p int, id string, wait time.Duration) ([]byte, bool, error) {
	deadline := time.Now().Add(wait)
	for {
		var body []byte
		err := b.pool.QueryRow(ctx, b.popSQL(), b.keys(name).reply(p, id)).Scan(&body)
		switch {
		case err == nil:
			return body, true, nil
		case !errors.Is(err, pgx.ErrNoRows):
			return nil, false, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, false, nil
		}
		select {
		case <-ctx.Done():
			return nil, false, nil
		case <-time.After(min(left, controlPoll)):
		}
	}
}

func (b *pgBackend) withdrawControl(ctx context.Context, name string, p int, req []byte) (bool, error) {
	tag, err := b.pool.Exec(ctx, `DELETE FROM `+b.control+` WHERE seq = (SELECT seq FROM `+b.control+` WHERE k = $1 AND body = $2 ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)`,
		b.keys(name).control(p), req)
	return err == nil && tag.RowsAffected() > 0, err
}

func (b *pgBackend) readCheckpoint(ctx context.Context, name string, p int, v int64) (checkpoint, error) {
	vals, err := b.hgetall(ctx, b.pool, b.keys(name).checkpoint(p, v))
	if err != nil {
		return checkpoint{}, fmt.Errorf("projection %q: read checkpoint: %w", name, err)
	}
	return parseCheckpoint(name, vals)
}

func (b *pgBackend) readParked(ctx context.Context, name string, p int, v int64) ([]ParkedRecord, error) {
	vals, err := b.hgetall(ctx, b.pool, b.keys(name).parked(p, v))
	if err != nil {
		return nil, fmt.Errorf("projection %q: read parked records: %w", name, err)
	}
	return decodeParked(vals)
}

func (b *pgBackend) readVersions(ctx context.Context, name string, p int, asks []*versionsAsk) error {
	k := b.keys(name)
	for _, a := range asks {
		got := map[string]int64{}
		rows, err := b.pool.Query(ctx, `SELECT f, v FROM `+b.state+` WHERE k = $1 AND f = ANY($2)`, k.streams(p, a.v), a.streams)
		if err != nil {
			return fmt.Errorf("projection %q: read stream versions: %w", name, err)
		}
		var f, v string
		if _, err := pgx.ForEachRow(rows, []any{&f, &v}, func() error {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return fmt.Errorf("stored version of %q: %q", f, v)
			}
			got[f] = n
			return nil
		}); err != nil {
			return fmt.Errorf("projection %q: read stream versions: %w", name, err)
		}
		a.versions = make([]int64, len(a.streams))
		for i, s := range a.streams {
			a.versions[i] = got[s]
		}
	}
	return nil
}

func (b *pgBackend) versionReady(ctx context.Context, name string, partitions int, v int64) (bool, error) {
	k := b.keys(name)
	ks := make([]string, partitions)
	for p := range ks {
		ks[p] = k.checkpoint(p, v)
	}
	var n int
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM `+b.state+` WHERE k = ANY($1) AND f = $2 AND v = '1'`, ks, readyField).Scan(&n); err != nil {
		return false, fmt.Errorf("projection %q: read readiness of v%d: %w", name, v, err)
	}
	return n == partitions, nil
}

func (b *pgBackend) metaAndSeq(ctx context.Context, name string, p int, v int64) (meta, string, error) {
	m, err := b.readMeta(ctx, name)
	if err != nil || v == 0 {
		return m, "", err
	}
	seq, _, err := b.hget(ctx, b.pool, b.keys(name).checkpoint(p, v), "seq")
	if err != nil {
		return meta{}, "", fmt.Errorf("projection %q: read checkpoint: %w", name, err)
	}
	return m, seq, nil
}

// likeEscape escapes s for a LIKE pattern (with the default escape '\').
func likeEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

func (b *pgBackend) deleteVersion(ctx context.Context, name string, p int, v int64) (int, error) {
	k := b.keys(name)
	ns := k.namespace(v, p, 1)
	b.mu.Lock()
	proj := b.projs[name]
	b.mu.Unlock()
	var n int
	err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		// The schema's lock: no first batch sets it up meanwhile.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, ns.Schema()); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM `+b.state+` WHERE k LIKE $1`, likeEscape(k.version(p, v)+":")+"%")
		if err != nil {
			return err
		}
		n = int(tag.RowsAffected())
		var exists, others bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, ns.Schema()).Scan(&exists); err != nil || !exists {
			return err
		}
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+b.state+` WHERE k LIKE $1)`,
			likeEscape(b.prefix+"{"+name+":")+"%"+likeEscape("}:v"+strconv.FormatInt(v, 10)+":")+"%").Scan(&others); err != nil {
			return err
		}
		if !others {
			// No partition has anything of version v left: drop its schema.
			_, err := tx.Exec(ctx, `DROP SCHEMA `+pgx.Identifier{ns.Schema()}.Sanitize()+` CASCADE`)
			return err
		}
		if proj == nil {
			return fmt.Errorf("projection %q: partition %d of v%d cannot be cleared by a reader", name, p, v)
		}
		clear := clearOf(proj)
		if clear == nil {
			return fmt.Errorf("projection %q: partition %d of v%d cannot be cleared: the projection has no Clear", name, p, v)
		}
		ns.Partitions = partitionsOf(proj)
		return clear(ctx, tx, ns)
	})
	if err != nil {
		return 0, fmt.Errorf("projection %q: delete v%d of partition %d: %w", name, v, p, err)
	}
	return n, nil
}

func (b *pgBackend) deleteVersions(ctx context.Context, name string, p int) error {
	k := b.keys(name)
	stem := k.part(p) + ":v"
	rows, err := b.pool.Query(ctx, `SELECT DISTINCT k FROM `+b.state+` WHERE k LIKE $1`, likeEscape(stem)+"%")
	if err != nil {
		return fmt.Errorf("projection %q: clear partition %d: %w", name, p, err)
	}
	versions := map[int64]bool{}
	var key string
	if _, err := pgx.ForEachRow(rows, []any{&key}, func() error {
		rest := strings.TrimPrefix(key, stem)
		if i := strings.IndexByte(rest, ':'); i > 0 {
			if v, err := strconv.ParseInt(rest[:i], 10, 64); err == nil {
				versions[v] = true
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("projection %q: clear partition %d: %w", name, p, err)
	}
	for v := range versions {
		if _, err := b.deleteVersion(ctx, name, p, v); err != nil {
			return err
		}
	}
	return nil
}

func (b *pgBackend) partStatus(ctx context.Context, name string, partitions int, active, building int64) ([]storedPart, storedError, error) {
	k := b.keys(name)
	out := make([]storedPart, partitions)
	for p := range partitions {
		if active != 0 {
			c, err := b.readCheckpoint(ctx, name, p, active)
			if err != nil {
				return nil, storedError{}, err
			}
			var n int
			if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM `+b.state+` WHERE k = $1`, k.parked(p, active)).Scan(&n); err != nil {
				return nil, storedError{}, fmt.Errorf("projection %q: read status: %w", name, err)
			}
			out[p].ckpt, out[p].parked = &c, n
		}
		if building != 0 {
			c, err := b.readCheckpoint(ctx, name, p, building)
			if err != nil {
				return nil, storedError{}, err
			}
			out[p].build = &c
		}
	}
	vals, err := b.hgetall(ctx, b.pool, k.lastError())
	if err != nil {
		return nil, storedError{}, fmt.Errorf("projection %q: read status: %w", name, err)
	}
	se := storedError{msg: vals["msg"]}
	if ns, err := strconv.ParseInt(vals["at"], 10, 64); err == nil {
		se.at = time.Unix(0, ns).UTC()
	}
	return out, se, nil
}

// leaseStore returns the lease table with the names under the key
// prefix, as the Redis leases are: deployments sharing a database (and
// projection names) hold leases of their own.
func (b *pgBackend) leaseStore() lease.Store { return prefixedLeases{b.leases, b.prefix} }

// prefixedLeases acquires and reads leases under prefix+name; Renew and
// Release get the lease as acquired, its name prefixed already.
type prefixedLeases struct {
	*pgstore.Leases
	prefix string
}

func (p prefixedLeases) Acquire(ctx context.Context, name, holder string, ttl time.Duration) (lease.Lease, error) {
	return p.Leases.Acquire(ctx, p.prefix+name, holder, ttl)
}

func (p prefixedLeases) Current(ctx context.Context, name string) (lease.Lease, bool, error) {
	return p.Leases.Current(ctx, p.prefix+name)
}

func (b *pgBackend) currentLeases(ctx context.Context, name string, ps []int) ([]liveLease, error) {
	out := make([]liveLease, len(ps))
	for i, p := range ps {
		l, ok, err := b.leases.Current(ctx, b.prefix+leaseName(name, p))
		if err != nil {
			return nil, fmt.Errorf("projection %q: read leases: %w", name, err)
		}
		out[i] = liveLease{Lease: l, ok: ok}
	}
	return out, nil
}

// pgTxn is a batch in one PostgreSQL transaction. Unless careful, the
// records' queued statements are sent at commit, with the bookkeeping, in
// one round trip; a record that fails after running statements of its
// own on the transaction, or a queued statement that fails, makes the
// batch be redone carefully: each record's statements sent on their own
// under a savepoint, so that a failing record is undone alone and parked.
type pgTxn struct {
	b       *pgBackend
	pt      *part
	sts     []*nsState
	tx      pgx.Tx
	careful bool
	batches []*Batch
	slots   []int // kept attempts per namespace
	vers    []map[string]int64
	before  []map[string]int64         // the versions vers were decided from (checked when an Inline shares the namespace)
	parks   []map[string]*ParkedRecord // per namespace: event ID -> record to store, nil to drop
	pending []queuedStatement          // queued statements of kept attempts, sent at commit
}

func (b *pgBackend) begin(ctx context.Context, pt *part, sts []*nsState, careful bool) (txn, error) {
	h := pt.held
	if h == nil {
		return nil, leaseLost(pt, errors.New("no session holds the lease"))
	}
	if err := h.Err(); err != nil {
		return nil, leaseLost(pt, err)
	}
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("projection %q: begin: %w", pt.pr.name, err)
	}
	t := &pgTxn{b: b, pt: pt, sts: sts, tx: tx, careful: careful,
		batches: make([]*Batch, len(sts)), slots: make([]int, len(sts)),
		vers: make([]map[string]int64, len(sts)), before: make([]map[string]int64, len(sts)),
		parks: make([]map[string]*ParkedRecord, len(sts))}
	fail := func(err error) (txn, error) {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return nil, err
	}
	// The lease first: FOR SHARE of its row until the commit, so that no
	// other runner takes the partition over before this one has committed.
	if err := b.leases.Check(ctx, tx, h.Lease()); err != nil {
		if errors.Is(err, lease.ErrLost) {
			return fail(leaseLost(pt, err))
		}
		return fail(fmt.Errorf("projection %q: check the lease: %w", pt.pr.name, err))
	}
	for i, st := range sts {
		if err := t.setup(ctx, st.ns); err != nil {
			return fail(err)
		}
		t.batches[i] = &Batch{tx: tx, ns: st.ns}
	}
	return t, nil
}

// setup creates the namespace version's schema and tables when they do
// not exist yet (under the schema's lock, so that concurrent first batches
// of the version's partitions create them once).
func (t *pgTxn) setup(ctx context.Context, ns Namespace) error {
	schema := ns.Schema()
	name := t.pt.pr.name
	exists := func() (bool, error) {
		var ok bool
		err := t.tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, schema).Scan(&ok)
		return ok, err
	}
	ok, err := exists()
	if err == nil && !ok {
		if _, err = t.tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, schema); err == nil {
			ok, err = exists()
		}
	}
	if err != nil {
		return fmt.Errorf("projection %q: set up %s: %w", name, schema, err)
	}
	if !ok {
		if _, err := t.tx.Exec(ctx, `CREATE SCHEMA `+pgx.Identifier{schema}.Sanitize()); err != nil {
			return fmt.Errorf("projection %q: set up %s: %w", name, schema, err)
		}
		setup := setupOf(t.pt.pr.p)
		if setup == nil {
			return fmt.Errorf("projection %q: no Setup to create its tables", name)
		}
		if err := setup(ctx, t.tx, ns); err != nil {
			return fmt.Errorf("projection %q: set up %s: %w", name, schema, err)
		}
	}
	return nil
}

func (t *pgTxn) projection() string { return t.pt.pr.name }

func (t *pgTxn) batch(i int) *Batch { return t.batches[i] }

func (t *pgTxn) attempt(ctx context.Context, i int, fn func() error) (int, error) {
	b := t.batches[i]
	b.usedTx, b.queued = false, b.queued[:0:0]
	if !t.careful {
		start := len(b.queued)
		if err := fn(); err != nil {
			if b.usedTx {
				// Its statements ran and may have aborted the
				// transaction: only a redo record by record can undo them.
				return 0, &targetError{errRedoCarefully}
			}
			b.queued = b.queued[:start]
			return 0, err
		}
		t.slots[i]++
		return t.slots[i] - 1, t.keep(i)
	}
	if _, err := t.tx.Exec(ctx, `SAVEPOINT eskit_record`); err != nil {
		return 0, &targetError{fmt.Errorf("projection %q: savepoint: %w", t.pt.pr.name, err)}
	}
	err := fn()
	if err == nil && len(b.queued) > 0 {
		err = t.send(ctx, b.queued)
	}
	if err == nil {
		err = b.flushGathered(ctx, t.tx)
	}
	b.queued, b.order, b.gathered = nil, nil, nil
	if err != nil {
		if _, rerr := t.tx.Exec(ctx, `ROLLBACK TO SAVEPOINT eskit_record`); rerr != nil {
			return 0, &targetError{fmt.Errorf("projection %q: roll back to savepoint: %w", t.pt.pr.name, rerr)}
		}
		return 0, err
	}
	if _, err := t.tx.Exec(ctx, `RELEASE SAVEPOINT eskit_record`); err != nil {
		return 0, &targetError{fmt.Errorf("projection %q: release savepoint: %w", t.pt.pr.name, err)}
	}
	t.slots[i]++
	return t.slots[i] - 1, nil
}

// keep moves a kept attempt's queued statements to the transaction's
// pending ones, sent at commit.
func (t *pgTxn) keep(i int) error {
	b := t.batches[i]
	if len(b.queued) > 0 {
		t.pending = append(t.pending, b.queued...)
		b.queued = nil
	}
	return nil
}

// send runs statements on the transaction in one round trip.
func (t *pgTxn) send(ctx context.Context, stmts []queuedStatement) error {
	batch := &pgx.Batch{}
	for _, s := range stmts {
		batch.Queue(s.sql, s.args...)
	}
	return t.tx.SendBatch(ctx, batch).Close()
}

func (t *pgTxn) park(_ context.Context, i int, rec ParkedRecord) error {
	if t.parks[i] == nil {
		t.parks[i] = map[string]*ParkedRecord{}
	}
	t.parks[i][rec.Record.ID.String()] = &rec
	return nil
}

func (t *pgTxn) unpark(_ context.Context, i int, ids []string) error {
	if t.parks[i] == nil {
		t.parks[i] = map[string]*ParkedRecord{}
	}
	for _, id := range ids {
		t.parks[i][id] = nil
	}
	return nil
}

func (t *pgTxn) setVersions(i int, vers, before map[string]int64) {
	t.vers[i], t.before[i] = vers, before
}

func (t *pgTxn) rollback(ctx context.Context) { _ = t.tx.Rollback(context.WithoutCancel(ctx)) }

func (t *pgTxn) commit(ctx context.Context, nexts []checkpoint) (failed []failedWrite, err error) {
	pt, pr, b := t.pt, t.pt.pr, t.b
	defer func() {
		if err != nil {
			t.rollback(ctx)
		}
	}()
	if err := pt.held.Err(); err != nil {
		return nil, leaseLost(pt, err)
	}
	gathered := false
	for _, bt := range t.batches {
		gathered = gathered || len(bt.order) > 0
	}
	if !t.careful && gathered {
		// The records' queued statements, then what they gathered.
		if len(t.pending) > 0 {
			if err := t.send(ctx, t.pending); err != nil {
				return nil, errRedoCarefully
			}
			t.pending = nil
		}
		for _, bt := range t.batches {
			if err := bt.flushGathered(ctx, t.tx); err != nil {
				return nil, errRedoCarefully
			}
		}
	}
	batch := &pgx.Batch{}
	seqs := make([]string, len(t.sts))
	found := make([]bool, len(t.sts))
	for _, st := range t.sts {
		batch.Queue(`SELECT v FROM `+b.state+` WHERE k = $1 AND f = 'seq' FOR UPDATE`, pr.k.checkpoint(pt.idx, st.ns.Version))
	}
	type versionCheck struct {
		i       int
		streams []string
	}
	var checks []versionCheck
	if b.inline {
		for i, st := range t.sts {
			if !st.serving || len(t.before[i]) == 0 {
				continue
			}
			streams := make([]string, 0, len(t.before[i]))
			for s := range t.before[i] {
				streams = append(streams, s)
			}
			slices.Sort(streams)
			checks = append(checks, versionCheck{i, streams})
			batch.Queue(`SELECT f, v FROM `+b.state+` WHERE k = $1 AND f = ANY($2) ORDER BY f FOR UPDATE`, pr.k.streams(pt.idx, st.ns.Version), streams)
		}
	}
	seqEnd := len(t.sts)
	userStart := batch.Len()
	for _, s := range t.pending {
		batch.Queue(s.sql, s.args...)
	}
	userEnd := batch.Len()
	for i, st := range t.sts {
		v := st.ns.Version
		if len(t.vers[i]) > 0 {
			fs, vs := make([]string, 0, len(t.vers[i])), make([]string, 0, len(t.vers[i]))
			for s, n := range t.vers[i] {
				fs, vs = append(fs, s), append(vs, strconv.FormatInt(n, 10))
			}
			batch.Queue(b.hsetSQL(), pr.k.streams(pt.idx, v), fs, vs)
		}
		var set, setV, drop []string
		for id, rec := range t.parks[i] {
			if rec == nil {
				drop = append(drop, id)
				continue
			}
			data, err := json.Marshal(rec)
			if err != nil {
				return nil, fmt.Errorf("projection %q: encode parked record: %w", pr.name, err)
			}
			set, setV = append(set, id), append(setV, string(data))
		}
		if len(drop) > 0 {
			batch.Queue(`DELETE FROM `+b.state+` WHERE k = $1 AND f = ANY($2)`, pr.k.parked(pt.idx, v), drop)
		}
		if len(set) > 0 {
			batch.Queue(b.hsetSQL(), pr.k.parked(pt.idx, v), set, setV)
		}
		c := nexts[i]
		c.seq = st.ckpt.seq + 1
		fs, vs := checkpointFields(c)
		batch.Queue(b.hsetSQL(), pr.k.checkpoint(pt.idx, v), fs, vs)
	}
	br := t.tx.SendBatch(ctx, batch)
	stale := ""
	for i := range batch.Len() {
		var err error
		switch {
		case i < seqEnd:
			err = br.QueryRow().Scan(&seqs[i])
			found[i] = err == nil
			if errors.Is(err, pgx.ErrNoRows) {
				err = nil
			}
		case i < userStart:
			c := checks[i-seqEnd]
			var rows pgx.Rows
			if rows, err = br.Query(); err == nil {
				stored := map[string]int64{}
				var f, v string
				_, err = pgx.ForEachRow(rows, []any{&f, &v}, func() error {
					n, perr := strconv.ParseInt(v, 10, 64)
					stored[f] = n
					return perr
				})
				for _, s := range c.streams {
					if err == nil && stale == "" && stored[s] != t.before[c.i][s] {
						stale = fmt.Sprintf("stream %q is at version %d, the batch was decided at %d (an Inline applied it meanwhile)", s, stored[s], t.before[c.i][s])
					}
				}
			}
		default:
			_, err = br.Exec()
		}
		if err != nil {
			_ = br.Close()
			if i >= userStart && i < userEnd && !t.careful {
				// A queued statement of a record failed: find which one.
				return nil, errRedoCarefully
			}
			return nil, fmt.Errorf("projection %q: commit: %w", pr.name, err)
		}
	}
	if err := br.Close(); err != nil {
		return nil, fmt.Errorf("projection %q: commit: %w", pr.name, err)
	}
	if stale != "" {
		return nil, fmt.Errorf("%w: %s", errStale, stale)
	}
	for i, st := range t.sts {
		want := ""
		if st.ckpt.exists {
			want = strconv.FormatInt(st.ckpt.seq, 10)
		}
		if seqs[i] != want || found[i] != st.ckpt.exists {
			if st.ckpt.exists {
				return nil, fmt.Errorf("%w: checkpoint of %s is at commit %q, this runner committed %q", errStale, st.ns, seqs[i], want)
			}
			return nil, fmt.Errorf("%w: checkpoint of %s appeared (commit %q)", errStale, st.ns, seqs[i])
		}
	}
	if err := t.tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("projection %q: commit: %w", pr.name, err)
	}
	return nil, nil
}

// checkpointFields returns a checkpoint's fields and values, as the Redis
// hash holds them.
func checkpointFields(c checkpoint) ([]string, []string) {
	kv := c.fields()
	fs, vs := make([]string, 0, len(kv)/2), make([]string, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		fs = append(fs, kv[i].(string))
		vs = append(vs, fmt.Sprint(kv[i+1]))
	}
	return fs, vs
}
