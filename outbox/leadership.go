package outbox

import (
	"context"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/eventstore"
)

// Checkpoints is where the relays of one name elect their leader and keep
// their checkpoint. The PostgreSQL implementation (the default, from
// NewRelay's pool) uses a session-level advisory lock and the checkpoints
// table; MemoryCheckpoints serves relays in one process (the embedded
// default, tests).
type Checkpoints interface {
	// Lead tries once, without waiting, to make the caller the leader of
	// the relay called name. It returns nil and no error when another
	// relay leads.
	Lead(ctx context.Context, name string) (Leadership, error)
}

// Leadership is a won election: the leader's checkpoint, whose writes are
// fenced by the leadership.
type Leadership interface {
	// Load returns the checkpoint (the zero Position when there is none).
	Load(ctx context.Context) (eventstore.Position, error)
	// Save moves the checkpoint. Once the leadership is lost it fails with
	// an error matching ErrNotLeader (or the connection's error): a deposed
	// leader can never move the checkpoint.
	Save(ctx context.Context, pos eventstore.Position) error
	// Check reports whether the leadership still holds (ErrNotLeader if not).
	Check(ctx context.Context) error
	// Close gives the leadership up.
	Close(ctx context.Context)
}

// PostgresCheckpoints elects relays with a session-level advisory lock held
// on a dedicated connection, and keeps their checkpoints in
// <schema>.checkpoints (created by the event store's migrations). Every
// checkpoint write runs on the lock's connection and checks the lock in the
// same statement. Each Relay needs its own PostgresCheckpoints.
type PostgresCheckpoints struct {
	pool   *pgxpool.Pool
	schema string

	mu   sync.Mutex
	conn *pgx.Conn // kept between standby attempts
}

// NewPostgresCheckpoints returns the PostgreSQL election and checkpoint store
// of relays in schema.
func NewPostgresCheckpoints(pool *pgxpool.Pool, schema string) *PostgresCheckpoints {
	return &PostgresCheckpoints{pool: pool, schema: schema}
}

// Lead implements Checkpoints.
func (p *PostgresCheckpoints) Lead(ctx context.Context, name string) (Leadership, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn == nil {
		c, err := acquire(ctx, p.pool)
		if err != nil {
			return nil, fmt.Errorf("outbox: connect for the leader lock: %w", err)
		}
		p.conn = c
	}
	object := lockKey(p.schema, name)
	ok, err := tryLock(ctx, p.conn, object)
	if err != nil {
		_ = p.conn.Close(context.WithoutCancel(ctx))
		p.conn = nil
		return nil, fmt.Errorf("outbox: take the leader lock: %w", err)
	}
	if !ok {
		return nil, nil
	}
	s := &session{conn: p.conn, table: checkpointTable(p.schema), name: name, object: object}
	p.conn = nil
	return s, nil
}

// Verify checks, without taking the lock, that the relays can work with
// the checkpoints at all: that <schema>.checkpoints exists (the event
// store's migrations create it) and that the role may read and write it.
// Relay.Run calls it before it starts; its errors then end Run (see Run).
func (p *PostgresCheckpoints) Verify(ctx context.Context) error {
	var ok bool
	err := p.pool.QueryRow(ctx, `SELECT has_table_privilege($1, 'SELECT, INSERT, UPDATE')`, checkpointTable(p.schema)).Scan(&ok)
	if err != nil {
		return fmt.Errorf("outbox: checkpoints table %s: %w", checkpointTable(p.schema), err)
	}
	if !ok {
		return fmt.Errorf("outbox: checkpoints table %s: %w", checkpointTable(p.schema), errNoPrivilege)
	}
	return nil
}

// Close closes the connection kept for standby attempts.
func (p *PostgresCheckpoints) Close(ctx context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil {
		_ = p.conn.Close(ctx)
		p.conn = nil
	}
}

// MemoryCheckpoints elects relays and keeps their checkpoints in memory, for
// relays that share one process: the embedded default and tests. It is safe
// for concurrent use; share one value between the relays that must elect a
// single leader.
type MemoryCheckpoints struct {
	mu      sync.Mutex
	leaders map[string]*memoryLeadership
	pos     map[string]eventstore.Position
}

// NewMemoryCheckpoints returns an empty in-memory election and checkpoint
// store.
func NewMemoryCheckpoints() *MemoryCheckpoints {
	return &MemoryCheckpoints{leaders: map[string]*memoryLeadership{}, pos: map[string]eventstore.Position{}}
}

// Lead implements Checkpoints.
func (m *MemoryCheckpoints) Lead(ctx context.Context, name string) (Leadership, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.leaders[name] != nil {
		return nil, nil
	}
	l := &memoryLeadership{m: m, name: name}
	m.leaders[name] = l
	return l, nil
}

// Position returns the stored checkpoint of the relay called name.
func (m *MemoryCheckpoints) Position(name string) eventstore.Position {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pos[name]
}

type memoryLeadership struct {
	m    *MemoryCheckpoints
	name string
}

func (l *memoryLeadership) held() bool { return l.m.leaders[l.name] == l }

func (l *memoryLeadership) Load(context.Context) (eventstore.Position, error) {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	if !l.held() {
		return eventstore.Position{}, ErrNotLeader
	}
	return l.m.pos[l.name], nil
}

func (l *memoryLeadership) Save(_ context.Context, pos eventstore.Position) error {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	if !l.held() {
		return fmt.Errorf("outbox: write checkpoint %q: %w", l.name, ErrNotLeader)
	}
	l.m.pos[l.name] = pos
	return nil
}

func (l *memoryLeadership) Check(context.Context) error {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	if !l.held() {
		return ErrNotLeader
	}
	return nil
}

func (l *memoryLeadership) Close(context.Context) {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	if l.held() {
		delete(l.m.leaders, l.name)
	}
}
