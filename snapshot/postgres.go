package snapshot

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Postgres is a Store on the snapshots table of an eskit PostgreSQL schema:
//
//	<schema>.snapshots (stream_id text PRIMARY KEY, version bigint NOT NULL,
//	    schema_version int NOT NULL, state bytea NOT NULL,
//	    taken_at timestamptz NOT NULL DEFAULT now())
//
// The event store's migrations (pgstore.Migrate) create the table.
type Postgres struct {
	pool   *pgxpool.Pool
	load   string
	save   string
	delete string
}

var _ Store = (*Postgres)(nil)

// NewPostgres returns a Store on schema's snapshots table.
func NewPostgres(pool *pgxpool.Pool, schema string) *Postgres {
	table := pgx.Identifier{schema, "snapshots"}.Sanitize()
	return &Postgres{
		pool: pool,
		load: `SELECT version, schema_version, state, taken_at FROM ` + table + ` WHERE stream_id = $1`,
		save: `INSERT INTO ` + table + ` AS s (stream_id, version, schema_version, state, taken_at)
VALUES ($1, $2, $3, $4, COALESCE($5, now()))
ON CONFLICT (stream_id) DO UPDATE
SET version = EXCLUDED.version, schema_version = EXCLUDED.schema_version,
    state = EXCLUDED.state, taken_at = EXCLUDED.taken_at
WHERE s.version <= EXCLUDED.version`,
		delete: `DELETE FROM ` + table + ` WHERE stream_id = $1`,
	}
}

// Load implements Store.
func (p *Postgres) Load(ctx context.Context, streamID string) (Snapshot, error) {
	s := Snapshot{StreamID: streamID}
	err := p.pool.QueryRow(ctx, p.load, streamID).Scan(&s.Version, &s.SchemaVersion, &s.State, &s.TakenAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Snapshot{}, &NotFoundError{StreamID: streamID}
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot: load stream %q: %w", streamID, err)
	}
	return s, nil
}

// Save implements Store.
func (p *Postgres) Save(ctx context.Context, s Snapshot) error {
	if err := validate(s); err != nil {
		return err
	}
	var takenAt any
	if !s.TakenAt.IsZero() {
		takenAt = s.TakenAt
	}
	if _, err := p.pool.Exec(ctx, p.save, s.StreamID, s.Version, s.SchemaVersion, s.State, takenAt); err != nil {
		return fmt.Errorf("snapshot: save stream %q at version %d: %w", s.StreamID, s.Version, err)
	}
	return nil
}

// Delete implements Store.
func (p *Postgres) Delete(ctx context.Context, streamID string) error {
	if _, err := p.pool.Exec(ctx, p.delete, streamID); err != nil {
		return fmt.Errorf("snapshot: delete stream %q: %w", streamID, err)
	}
	return nil
}
