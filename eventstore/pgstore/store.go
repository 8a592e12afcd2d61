// Package pgstore is the PostgreSQL eskit event store, on pgx v5.
//
// Events live in <schema>.events; the global feed is ordered by
// (transaction ID, sequence number) and only shows rows written by
// transactions older than every transaction still running, so a reader that
// tails the feed never skips an event that commits late (see ReadAll).
// Appends take one round trip: an append to one stream is one INSERT that
// takes the stream lock itself, or two pipelined statements (the stream
// lock, then an INSERT guarded by the version check; see appendSingle),
// appends to several streams and AppendTx call the append_events function;
// bulk imports use COPY. Loads for the aggregate repository read a stream's
// snapshot and the events after it in one query (LoadWithSnapshot). Subscribers of a Store are woken in-process right after each commit
// and, across processes, by a coalesced notification sent after the commit
// (never inside the append's transaction), with adaptive polling as a
// fallback.
//
// The schema is created and upgraded by Migrate (or New with
// WithAutoMigrate).
//
// The store expects PostgreSQL's default isolation level, READ COMMITTED,
// on the pool's connections: an append's version check reads after the
// stream lock is granted, which a REPEATABLE READ or SERIALIZABLE default
// (default_transaction_isolation) would turn into needless conflicts.
// Order and data stay correct either way: the unique (stream, version) key
// catches every stale check.
package pgstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/telemetry"
)

// Default tuning of subscriptions.
const (
	// DefaultPollInterval is the longest a subscriber waits without a
	// wake-up before it reads the feed again.
	DefaultPollInterval = 250 * time.Millisecond
	// DefaultMinPollInterval is the first delay of the quick polling that
	// starts when a wake-up finds nothing new: the events are committed
	// but still behind the feed's safe point.
	DefaultMinPollInterval = time.Millisecond
	// DefaultNotifyInterval is the shortest time between two cross-process
	// notifications of one Store: commits in between share one.
	DefaultNotifyInterval = 2 * time.Millisecond
	// DefaultReadBatch is the page size of stream reads and subscriptions.
	DefaultReadBatch = eventstore.DefaultBatchSize
)

// Store is a PostgreSQL event store. It is safe for concurrent use. Create
// it with New and stop its background work with Close; the pool stays the
// caller's.
type Store struct {
	pool   *pgxpool.Pool
	schema string
	limits eventstore.Limits
	log    *slog.Logger

	autoMigrate bool
	notify      bool
	notifyEvery time.Duration
	pollMax     time.Duration
	pollMin     time.Duration
	batch       int
	telOpts     []telemetry.Option
	tel         *appendTelemetry

	// SQL texts with the schema substituted.
	q queries

	instance string // payload of this store's notifications
	channel  string // LISTEN/NOTIFY channel of the schema

	closed atomic.Bool
	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	sigMu   sync.Mutex
	changed chan struct{} // closed and replaced on every wake-up

	kick         chan struct{} // coalesced request for a cross-process notify
	listenerOnce sync.Once

	// large is set once the events table is large enough that no plan of
	// the store's lookups can be a sequential scan (see watchTableSize).
	large atomic.Bool
	// known remembers versions of streams the store has seen committed.
	known knownVersions
}

// Option configures a Store.
type Option func(*Store)

// WithSchema sets the PostgreSQL schema holding the store's tables
// (DefaultSchema otherwise). New rejects names ValidateSchema refuses.
func WithSchema(name string) Option { return func(s *Store) { s.schema = name } }

// WithLimits sets the append limits (eventstore defaults otherwise).
func WithLimits(l eventstore.Limits) Option { return func(s *Store) { s.limits = l } }

// WithLogger sets the logger for background work (connection losses of
// the listener, failed notifications). The default discards.
func WithLogger(l *slog.Logger) Option { return func(s *Store) { s.log = l } }

// WithAutoMigrate makes New run Migrate before returning.
func WithAutoMigrate() Option { return func(s *Store) { s.autoMigrate = true } }

// WithNotify turns the cross-process wake-up on or off (on by default).
// When on, every commit of this Store is followed by a coalesced NOTIFY
// (at most one in flight, outside the append's transaction), and
// subscribers LISTEN on a dedicated connection. When off, subscribers of
// other processes see new events through polling only.
func WithNotify(on bool) Option { return func(s *Store) { s.notify = on } }

// WithNotifyInterval sets the shortest time between two cross-process
// notifications (DefaultNotifyInterval): commits within it share one, which
// bounds the cost of notifying under heavy writes at the price of that much
// extra latency for subscribers in other processes.
func WithNotifyInterval(d time.Duration) Option { return func(s *Store) { s.notifyEvery = d } }

// WithPollInterval sets the subscribers' polling: max is the longest wait
// without a wake-up (DefaultPollInterval), min the first delay of the
// quick polling used while committed events are held behind the feed's
// safe point (DefaultMinPollInterval); that delay doubles up to max.
func WithPollInterval(min, max time.Duration) Option {
	return func(s *Store) { s.pollMin, s.pollMax = min, max }
}

// WithReadBatch sets the page size of stream reads and of subscriptions'
// feed reads (DefaultReadBatch).
func WithReadBatch(n int) Option { return func(s *Store) { s.batch = n } }

// New returns a store on pool. It checks that the schema is migrated (or
// migrates it with WithAutoMigrate) and fails otherwise.
func New(ctx context.Context, pool *pgxpool.Pool, opts ...Option) (*Store, error) {
	if pool == nil {
		return nil, &eventstore.InvalidArgumentError{Field: "pool", Reason: "nil"}
	}
	s := &Store{
		pool:        pool,
		schema:      DefaultSchema,
		notify:      true,
		notifyEvery: DefaultNotifyInterval,
		pollMax:     DefaultPollInterval,
		pollMin:     DefaultMinPollInterval,
		batch:       DefaultReadBatch,
		changed:     make(chan struct{}),
		kick:        make(chan struct{}, 1),
	}
	for _, o := range opts {
		o(s)
	}
	if err := ValidateSchema(s.schema); err != nil {
		return nil, err
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.pollMax <= 0 {
		s.pollMax = DefaultPollInterval
	}
	if s.pollMin <= 0 || s.pollMin > s.pollMax {
		s.pollMin = min(DefaultMinPollInterval, s.pollMax)
	}
	if s.batch <= 0 {
		s.batch = DefaultReadBatch
	}
	s.q = newQueries(s.schema)
	s.tel = newAppendTelemetry(telemetry.NewConfig(s.telOpts...))
	s.channel = s.schema + "_feed"
	var id [8]byte
	_, _ = rand.Read(id[:])
	s.instance = hex.EncodeToString(id[:])

	if s.autoMigrate {
		if err := Migrate(ctx, pool, s.schema); err != nil {
			return nil, err
		}
	} else {
		st, err := MigrationStatus(ctx, pool, s.schema)
		if err != nil {
			return nil, err
		}
		if !st.UpToDate() {
			return nil, fmt.Errorf("pgstore: schema %s has %d pending migrations: run Migrate (or eskit migrate) first, or use WithAutoMigrate", s.schema, len(st.Pending))
		}
	}

	s.ctx, s.cancel = context.WithCancel(context.Background())
	if !s.checkTableSize(ctx) {
		s.wg.Go(s.watchTableSize)
	}
	if s.notify {
		s.wg.Go(s.notifier)
	}
	return s, nil
}

// Close stops the store's background goroutines and ends its
// subscriptions. It does not close the pool. Operations on a closed store
// fail with eventstore.ErrClosed.
func (s *Store) Close() {
	if s.closed.Swap(true) {
		return
	}
	s.cancel()
	s.wg.Wait()
	s.wake()
}

// largeTablePages is the size of the events table, in pages, from which
// the planner never prefers a sequential scan (and a sort) to an index
// probe of a stream: at a few pages it does, and a plan cached then would
// scan the whole table at every use as the table grows, until the next
// ANALYZE invalidates it. The planner sizes a table by its current number
// of pages, so plans made once it has this many (hundreds of times the
// crossover) are index plans.
const largeTablePages = 1000

// tableSizeInterval is how often a store whose events table is still
// small looks at its size again.
const tableSizeInterval = 5 * time.Second

// checkTableSize records whether the events table is large (see
// largeTablePages) and reports it. Until it is, appends after an exact
// version and loads turn sequential scans off for their own transaction,
// at the cost of a statement (see appendSingle): every plan they cache is
// then an index plan. Tables never shrink (events are not deleted), so
// once large the store stops looking.
func (s *Store) checkTableSize(ctx context.Context) bool {
	var pages int64
	err := s.pool.QueryRow(ctx, `SELECT pg_relation_size(to_regclass($1)) / current_setting('block_size')::bigint`,
		quoteIdent(s.schema)+".events").Scan(&pages)
	if err != nil {
		if s.ctx.Err() == nil {
			s.log.Debug("pgstore: events table size", "schema", s.schema, "err", err)
		}
		return false
	}
	if pages >= largeTablePages {
		s.large.Store(true)
		return true
	}
	return false
}

// watchTableSize checks the events table's size every tableSizeInterval
// until it is large.
func (s *Store) watchTableSize() {
	t := time.NewTicker(tableSizeInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		large := s.checkTableSize(ctx)
		cancel()
		if large {
			return
		}
	}
}

// Schema returns the PostgreSQL schema of the store's tables.
func (s *Store) Schema() string { return s.schema }

// Pool returns the pool the store runs on.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

func (s *Store) checkOpen() error {
	if s.closed.Load() {
		return eventstore.ErrClosed
	}
	return nil
}

var _ eventstore.Store = (*Store)(nil)

// queries holds the store's SQL with the schema substituted.
type queries struct {
	append        string
	readAll       string
	head          string
	lag           string
	readStream    string
	readBackward  string
	streamExists  string
	streamVersion string
	readEvent     string
	recordsByID   string
	eventStream   string
	eventBodies   string
	existing      string
	lastSeq       string
	lockStream    string
	insertOne     string
	insertMany    string
	// Single-stream inserts of versions $2+1.. that take the stream lock
	// themselves (see streamLock) and read nothing: for a new stream
	// (NoStream), and after an exact version the store knows the stream
	// has (see knownVersions).
	insertAtOne  string
	insertAtMany string
	// Single-stream inserts after an exact version above 0 that they
	// probe; for a small table (after the lock statement)...
	insertAfterOne  string
	insertAfterMany string
	// ... and for a large one (taking the lock themselves).
	insertAfterLockedOne  string
	insertAfterLockedMany string
	storedCopies          string
	// LoadWithSnapshot's queries.
	loadWithSnapshot string
	loadEvents       string
}

const recordCols = `tx, seq, id, stream_id, version, event_type, data, metadata, recorded_at`

// safePoint is the feed's safe point: every transaction with a smaller ID
// has ended, so no row below it can still appear.
const safePoint = `pg_snapshot_xmin(pg_current_snapshot())::text::bigint`

func newQueries(schema string) queries {
	t := quoteIdent(schema) + ".events"
	lastVersion := lastVersionSQL(t)
	withSnapshot, events := loadQueries(t, quoteIdent(schema)+".snapshots")
	return queries{
		loadWithSnapshot: withSnapshot,
		loadEvents:       events,
		append: `SELECT r_kind, r_stream, r_id, r_version, r_tx, r_seq FROM ` + quoteIdent(schema) +
			`.append_events($1, $2, $3, $4, $5, $6, $7, $8)`,
		readAll: `SELECT ` + recordCols + ` FROM ` + t +
			` WHERE (tx, seq) > ($1, $2) AND tx < ` + safePoint + ` ORDER BY tx, seq LIMIT $3`,
		head: `SELECT tx, seq FROM ` + t + ` WHERE tx < ` + safePoint + ` ORDER BY tx DESC, seq DESC LIMIT 1`,
		lag: `SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - min(recorded_at)), 0)::float8 FROM ` + t +
			` WHERE tx >= ` + safePoint,
		readStream: `SELECT ` + recordCols + ` FROM ` + t +
			` WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3`,
		readBackward: `SELECT ` + recordCols + ` FROM ` + t +
			` WHERE stream_id = $1 AND version <= $2 ORDER BY version DESC LIMIT $3`,
		streamExists:  `SELECT EXISTS (SELECT 1 FROM ` + t + ` WHERE stream_id = $1)`,
		streamVersion: `SELECT version FROM ` + t + ` WHERE stream_id = $1 ORDER BY version DESC LIMIT 1`,
		readEvent:     `SELECT ` + recordCols + ` FROM ` + t + ` WHERE id = $1`,
		recordsByID:   `SELECT ` + recordCols + ` FROM ` + t + ` WHERE id = ANY($1) ORDER BY tx, seq`,
		eventStream:   `SELECT stream_id FROM ` + t + ` WHERE id = $1`,
		eventBodies:   `SELECT id, stream_id, event_type, data FROM ` + t + ` WHERE id = ANY($1)`,
		existing: `SELECT DISTINCT ON (stream_id) stream_id, version FROM ` + t +
			` WHERE stream_id = ANY ($1) ORDER BY stream_id, version DESC`,
		lastSeq: `SELECT currval('` + quoteIdent(schema) + `.events_seq')`,
		// $1 is '<schema>/<stream>', as append_events hashes it.
		lockStream: `SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0)), set_config('enable_seqscan', 'off', true)`,
		insertOne: `INSERT INTO ` + t + ` (tx, id, stream_id, version, event_type, data, metadata)
SELECT pg_current_xact_id()::text::bigint, $3::uuid, $1::text, l.v + 1, $4::text, $5::bytea, $6::bytea
FROM ` + lastVersion + `
WHERE ` + versionCheck + `
RETURNING version, tx, seq`,
		insertMany: lastInserted(`INSERT INTO ` + t + ` (tx, id, stream_id, version, event_type, data, metadata)
SELECT pg_current_xact_id()::text::bigint, u.id, $1::text, l.v + u.n, u.typ, u.dat, u.md
FROM ` + lastVersion + `,
	unnest($3::uuid[], $4::text[], $5::bytea[], $6::bytea[]) WITH ORDINALITY AS u(id, typ, dat, md, n)
WHERE ` + versionCheck + `
ORDER BY u.n
RETURNING version, tx, seq`),
		storedCopies:          `SELECT stream_id, id, version, tx, seq FROM ` + t + ` WHERE id = ANY ($1)`,
		insertAtOne:           insertOneSQL(t, streamLock(schema)),
		insertAtMany:          insertManySQL(t, streamLock(schema)),
		insertAfterLockedOne:  insertOneSQL(t, streamLock(schema)+` AND `+versionExists(t)),
		insertAfterLockedMany: insertManySQL(t, streamLock(schema)+` AND `+versionExists(t)),
		insertAfterOne:        insertOneSQL(t, versionExists(t)),
		insertAfterMany:       insertManySQL(t, versionExists(t)),
	}
}

// streamLock, in the single-statement inserts, is a condition whose
// evaluation takes the stream's ($1) advisory lock, with the key of
// lockStream and append_events. It is an uncorrelated subquery, which
// PostgreSQL evaluates once, as a one-time filter, before the first row
// the INSERT writes (and with it the transaction ID) is computed. The
// statement's snapshot is taken before the lock: the inserts read nothing
// that depends on it but the probe of insertAfterLocked* (see
// appendSingle).
func streamLock(schema string) string {
	return `(SELECT true FROM pg_advisory_xact_lock(hashtextextended('` + schema + `/' || $1::text, 0)))`
}

// versionExists, in the inserts after an exact version, checks that the
// stream ($1) has its event at the expected version ($2 > 0): the stream
// is then exactly there or beyond, and the unique (stream, version) key
// refuses the insert when it is beyond.
func versionExists(t string) string {
	return `EXISTS (SELECT 1 FROM ` + t + ` x WHERE x.stream_id = $1::text AND x.version = $2::bigint)`
}

// lastVersion, in the single-stream inserts, is the one-row relation l
// holding the stream's ($1) version v, 0 when it has no events.
func lastVersionSQL(t string) string {
	return `(SELECT coalesce(max(last.version), 0) AS v FROM (SELECT version FROM ` + t +
		` WHERE stream_id = $1::text ORDER BY version DESC LIMIT 1) last) l`
}

// versionCheck, in the single-stream inserts, checks the expected version
// $2 (-1 any, -2 the stream exists, n >= 0 exactly n) against l.v.
const versionCheck = `$2::bigint = -1 OR ($2::bigint = -2 AND l.v > 0) OR $2::bigint = l.v`

// insertOneSQL and insertManySQL are the conditional inserts of one event
// ($3..$6) or of many (arrays $3..$6) after version $2 of stream $1,
// inserted only WHERE cond holds.
func insertOneSQL(table, cond string) string {
	return `INSERT INTO ` + table + ` (tx, id, stream_id, version, event_type, data, metadata)
SELECT pg_current_xact_id()::text::bigint, $3::uuid, $1::text, $2::bigint + 1, $4::text, $5::bytea, $6::bytea
WHERE ` + cond + `
RETURNING version, tx, seq`
}

func insertManySQL(table, cond string) string {
	return lastInserted(`INSERT INTO ` + table + ` (tx, id, stream_id, version, event_type, data, metadata)
SELECT pg_current_xact_id()::text::bigint, u.id, $1::text, $2::bigint + u.n, u.typ, u.dat, u.md
FROM unnest($3::uuid[], $4::text[], $5::bytea[], $6::bytea[]) WITH ORDINALITY AS u(id, typ, dat, md, n)
WHERE ` + cond + `
ORDER BY u.n
RETURNING version, tx, seq`)
}

// lastInserted wraps a multi-row insert RETURNING version, tx, seq into a
// statement that returns one row, the highest version, transaction ID and
// sequence number written, or no row when the insert wrote none: what
// appendSingle reads, without sending a row per event.
func lastInserted(insert string) string {
	return `WITH ins AS (` + insert + `)
SELECT max(version), max(tx), max(seq) FROM ins HAVING count(*) > 0`
}
