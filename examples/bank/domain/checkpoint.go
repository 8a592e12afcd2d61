package domain

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/eventstore"
)

// Checkpoints keeps, by name, how far a reader of the store's feed has
// got. A reader resumes after its checkpoint, so it must make handling a
// record twice harmless: a crash may come between handling and saving.
type Checkpoints interface {
	// Load returns the named checkpoint, or the zero Position (the start
	// of the feed) when it was never saved.
	Load(ctx context.Context, name string) (eventstore.Position, error)
	// Save stores the named checkpoint.
	Save(ctx context.Context, name string, pos eventstore.Position) error
}

// MemoryCheckpoints keeps checkpoints in memory: for the embedded bank and
// tests. It is safe for concurrent use.
type MemoryCheckpoints struct {
	mu  sync.Mutex
	pos map[string]eventstore.Position
}

var _ Checkpoints = (*MemoryCheckpoints)(nil)

// NewMemoryCheckpoints returns an empty MemoryCheckpoints.
func NewMemoryCheckpoints() *MemoryCheckpoints {
	return &MemoryCheckpoints{pos: make(map[string]eventstore.Position)}
}

// Load implements Checkpoints.
func (m *MemoryCheckpoints) Load(_ context.Context, name string) (eventstore.Position, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pos[name], nil
}

// Save implements Checkpoints.
func (m *MemoryCheckpoints) Save(_ context.Context, name string, pos eventstore.Position) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pos[name] = pos
	return nil
}

// PostgresCheckpoints keeps checkpoints in the <schema>.checkpoints table
// that pgstore.Migrate creates, next to the events, so they survive the
// process.
type PostgresCheckpoints struct {
	pool  *pgxpool.Pool
	table string
}

var _ Checkpoints = (*PostgresCheckpoints)(nil)

// NewPostgresCheckpoints returns the checkpoints of the event store in
// schema.
func NewPostgresCheckpoints(pool *pgxpool.Pool, schema string) (*PostgresCheckpoints, error) {
	if pool == nil {
		return nil, errors.New("bank: nil pool")
	}
	if schema == "" {
		return nil, &ValidationError{Field: "schema", Reason: "empty"}
	}
	return &PostgresCheckpoints{pool: pool, table: pgx.Identifier{schema, "checkpoints"}.Sanitize()}, nil
}

// Load implements Checkpoints.
func (p *PostgresCheckpoints) Load(ctx context.Context, name string) (eventstore.Position, error) {
	var tx, seq int64
	err := p.pool.QueryRow(ctx, `SELECT pos_tx, pos_seq FROM `+p.table+` WHERE name = $1`, name).Scan(&tx, &seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return eventstore.Position{}, nil
	}
	if err != nil {
		return eventstore.Position{}, fmt.Errorf("bank: load checkpoint %q: %w", name, err)
	}
	return eventstore.Position{Tx: uint64(tx), Seq: uint64(seq)}, nil
}

// Save implements Checkpoints.
func (p *PostgresCheckpoints) Save(ctx context.Context, name string, pos eventstore.Position) error {
	_, err := p.pool.Exec(ctx, `INSERT INTO `+p.table+` (name, pos_tx, pos_seq, updated_at) VALUES ($1, $2, $3, now())
		ON CONFLICT (name) DO UPDATE SET pos_tx = EXCLUDED.pos_tx, pos_seq = EXCLUDED.pos_seq, updated_at = EXCLUDED.updated_at`,
		name, int64(pos.Tx), int64(pos.Seq))
	if err != nil {
		return fmt.Errorf("bank: save checkpoint %q: %w", name, err)
	}
	return nil
}
