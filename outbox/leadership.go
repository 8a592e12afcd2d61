package outbox

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/lease"
)

// LeaseName is the name of the lease the relays called name elect their
// leader with ("relay:outbox"). The lease lives in the Checkpoints' lease
// store: for PostgresCheckpoints, the leases table of the relays' schema.
func LeaseName(name string) string { return "relay:" + name }

// Checkpoints is where the relays of one name elect their leader and keep
// their checkpoint. The relay holds a lease (package lease) of
// LeaseName(name) on Leases(), and writes its checkpoint through the
// Leadership that Lead returns for the held lease; every such write is
// fenced by the lease. The PostgreSQL implementation (the default, from
// NewRelay's pool) uses the schema's leases and checkpoints tables;
// MemoryCheckpoints serves relays in one process (the embedded default,
// tests).
type Checkpoints interface {
	// Leases returns the lease store the relays elect their leader on.
	Leases() lease.Store
	// Lead returns the checkpoint of the relay called name, written under
	// held, the relay's lease (of LeaseName(name) on Leases()).
	Lead(ctx context.Context, name string, held *lease.Held) (Leadership, error)
}

// Leadership is a won election: the leader's checkpoint, whose writes are
// fenced by the leader's lease.
type Leadership interface {
	// Load returns the checkpoint (the zero Position when there is none).
	Load(ctx context.Context) (eventstore.Position, error)
	// Save moves the checkpoint. Once the lease is lost (expired, taken
	// over, released, or past the holder's own deadline) it fails with an
	// error matching ErrNotLeader and lease.ErrLost (lease.ErrFenced when
	// the store refused it), or with the connection's error: a deposed
	// leader can never move the checkpoint.
	Save(ctx context.Context, pos eventstore.Position) error
	// Check reports whether the lease still holds (ErrNotLeader if not).
	Check(ctx context.Context) error
	// Close frees what the leadership uses (not the lease: its holder
	// releases it).
	Close(ctx context.Context)
}

// progressReader is implemented by Checkpoints that can tell a standby
// where the leader's checkpoint is and when it last moved.
type progressReader interface {
	progress(ctx context.Context, name string) (pos eventstore.Position, at time.Time, ok bool, err error)
}

// notLeader returns the error of a write refused because the lease is
// gone: it matches ErrNotLeader and lease.ErrLost (and lease.ErrFenced
// when cause does).
func notLeader(what string, l lease.Lease, cause error) error {
	if !errors.Is(cause, lease.ErrLost) {
		cause = lease.Lost(l, cause.Error())
	}
	return fmt.Errorf("%w: %s: %w", ErrNotLeader, what, cause)
}

// PostgresCheckpoints elects relays with a lease on <schema>.leases
// (pgstore.Leases) and keeps their checkpoints in <schema>.checkpoints
// (both created by the event store's migrations). Every checkpoint write
// checks the lease in the same statement (pgstore.Leases.GuardSQL: its
// name, token and expiry, by the server's clock), so a deposed leader's
// write is refused even when it does not know yet that it was deposed.
type PostgresCheckpoints struct {
	pool   *pgxpool.Pool
	schema string
	leases *pgstore.Leases
}

// NewPostgresCheckpoints returns the PostgreSQL election and checkpoint store
// of relays in schema.
func NewPostgresCheckpoints(pool *pgxpool.Pool, schema string) *PostgresCheckpoints {
	return &PostgresCheckpoints{pool: pool, schema: schema, leases: pgstore.NewLeases(pool, schema)}
}

// Leases implements Checkpoints: the leases table of the schema.
func (p *PostgresCheckpoints) Leases() lease.Store { return p.leases }

// Lead implements Checkpoints. The leadership writes on a dedicated
// connection (taken out of the pool, closed by Close).
func (p *PostgresCheckpoints) Lead(ctx context.Context, name string, held *lease.Held) (Leadership, error) {
	if err := held.Err(); err != nil {
		return nil, notLeader("lead relay "+name, held.Lease(), err)
	}
	conn, err := acquire(ctx, p.pool)
	if err != nil {
		return nil, fmt.Errorf("outbox: connect for the checkpoint: %w", err)
	}
	return &session{
		conn: conn, table: checkpointTable(p.schema), name: name, held: held,
		guard: p.leases.GuardSQL(4, 5), check: `SELECT ` + p.leases.GuardSQL(1, 2),
	}, nil
}

// progress implements progressReader.
func (p *PostgresCheckpoints) progress(ctx context.Context, name string) (eventstore.Position, time.Time, bool, error) {
	st, err := readCheckpoint(ctx, p.pool, p.schema, name)
	return st.Checkpoint, st.CheckpointAt, st.HasCheckpoint, err
}

// Verify checks, without taking the lease, that the relays can work with
// the checkpoints at all: that <schema>.checkpoints and <schema>.leases
// exist (the event store's migrations create them) and that the role may
// read and write them. Relay.Run calls it before it starts; its errors
// then end Run (see Run).
func (p *PostgresCheckpoints) Verify(ctx context.Context) error {
	for _, table := range []string{checkpointTable(p.schema), p.leases.Table()} {
		var ok bool
		err := p.pool.QueryRow(ctx, `SELECT has_table_privilege($1, 'SELECT, INSERT, UPDATE')`, table).Scan(&ok)
		if err != nil {
			return fmt.Errorf("outbox: table %s: %w", table, err)
		}
		if !ok {
			return fmt.Errorf("outbox: table %s: %w", table, errNoPrivilege)
		}
	}
	return nil
}

// MemoryCheckpoints elects relays and keeps their checkpoints in memory, for
// relays that share one process: the embedded default and tests. Its
// leases are a lease.MemoryStore. It is safe for concurrent use; share one
// value between the relays that must elect a single leader.
type MemoryCheckpoints struct {
	leases *lease.MemoryStore

	mu  sync.Mutex
	pos map[string]eventstore.Position
	at  map[string]time.Time
}

// NewMemoryCheckpoints returns an empty in-memory election and checkpoint
// store.
func NewMemoryCheckpoints() *MemoryCheckpoints {
	return &MemoryCheckpoints{leases: lease.NewMemoryStore(), pos: map[string]eventstore.Position{}, at: map[string]time.Time{}}
}

// Leases implements Checkpoints.
func (m *MemoryCheckpoints) Leases() lease.Store { return m.leases }

// Lead implements Checkpoints.
func (m *MemoryCheckpoints) Lead(ctx context.Context, name string, held *lease.Held) (Leadership, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := held.Err(); err != nil {
		return nil, notLeader("lead relay "+name, held.Lease(), err)
	}
	return &memoryLeadership{m: m, name: name, held: held}, nil
}

// Position returns the stored checkpoint of the relay called name.
func (m *MemoryCheckpoints) Position(name string) eventstore.Position {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pos[name]
}

// progress implements progressReader.
func (m *MemoryCheckpoints) progress(_ context.Context, name string) (eventstore.Position, time.Time, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	at, ok := m.at[name]
	return m.pos[name], at, ok, nil
}

type memoryLeadership struct {
	m    *MemoryCheckpoints
	name string
	held *lease.Held
}

// guarded runs write when the lease is live in the store with the
// holder's token, with no takeover in between (lease.MemoryStore.Guard).
func (l *memoryLeadership) guarded(ctx context.Context, what string, write func()) error {
	held := l.held.Lease()
	if err := l.held.Err(); err != nil {
		return notLeader(what, held, err)
	}
	err := l.m.leases.Guard(ctx, held, func() error {
		l.m.mu.Lock()
		defer l.m.mu.Unlock()
		write()
		return nil
	})
	if errors.Is(err, lease.ErrLost) {
		return notLeader(what, held, err)
	}
	if err != nil {
		return fmt.Errorf("outbox: %s: %w", what, err)
	}
	return nil
}

func (l *memoryLeadership) Load(ctx context.Context) (eventstore.Position, error) {
	var pos eventstore.Position
	err := l.guarded(ctx, fmt.Sprintf("read checkpoint %q", l.name), func() { pos = l.m.pos[l.name] })
	return pos, err
}

func (l *memoryLeadership) Save(ctx context.Context, pos eventstore.Position) error {
	return l.guarded(ctx, fmt.Sprintf("write checkpoint %q", l.name), func() {
		l.m.pos[l.name] = pos
		l.m.at[l.name] = time.Now()
	})
}

func (l *memoryLeadership) Check(ctx context.Context) error {
	return l.guarded(ctx, fmt.Sprintf("check leadership of %q", l.name), func() {})
}

func (l *memoryLeadership) Close(context.Context) {}
