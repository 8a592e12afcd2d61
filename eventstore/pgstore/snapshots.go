package pgstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/snapshot"
)

// Snapshots is a snapshot.Store on the snapshots table of an eskit
// PostgreSQL schema:
//
//	<schema>.snapshots (stream_id text PRIMARY KEY, version bigint NOT NULL,
//	    schema_version int NOT NULL, state bytea NOT NULL,
//	    taken_at timestamptz NOT NULL DEFAULT now())
//
// The event store's migrations (Migrate) create the table. Store.Snapshots
// returns the one of a store's schema.
type Snapshots struct {
	pool   *pgxpool.Pool
	schema string
	load   string
	save   string
	delete string
}

var _ snapshot.Store = (*Snapshots)(nil)

// Snapshots returns the snapshot store of the store's schema.
func (s *Store) Snapshots() *Snapshots { return NewSnapshots(s.pool, s.schema) }

// NewSnapshots returns a snapshot.Store on schema's snapshots table.
func NewSnapshots(pool *pgxpool.Pool, schema string) *Snapshots {
	table := pgx.Identifier{schema, "snapshots"}.Sanitize()
	return &Snapshots{
		pool:   pool,
		schema: schema,
		load:   `SELECT version, schema_version, state, taken_at FROM ` + table + ` WHERE stream_id = $1`,
		save: `INSERT INTO ` + table + ` AS s (stream_id, version, schema_version, state, taken_at)
VALUES ($1, $2, $3, $4, COALESCE($5, now()))
ON CONFLICT (stream_id) DO UPDATE
SET version = EXCLUDED.version, schema_version = EXCLUDED.schema_version,
    state = EXCLUDED.state, taken_at = EXCLUDED.taken_at
WHERE s.version <= EXCLUDED.version`,
		delete: `DELETE FROM ` + table + ` WHERE stream_id = $1`,
	}
}

// Load implements snapshot.Store.
func (p *Snapshots) Load(ctx context.Context, streamID string) (snapshot.Snapshot, error) {
	s := snapshot.Snapshot{StreamID: streamID}
	err := p.pool.QueryRow(ctx, p.load, streamID).Scan(&s.Version, &s.SchemaVersion, &s.State, &s.TakenAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return snapshot.Snapshot{}, &snapshot.NotFoundError{StreamID: streamID}
	}
	if err != nil {
		return snapshot.Snapshot{}, fmt.Errorf("snapshot: load stream %q: %w", streamID, err)
	}
	return s, nil
}

// Save implements snapshot.Store.
func (p *Snapshots) Save(ctx context.Context, s snapshot.Snapshot) error {
	if err := snapshot.Validate(s); err != nil {
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

// Delete implements snapshot.Store.
func (p *Snapshots) Delete(ctx context.Context, streamID string) error {
	if _, err := p.pool.Exec(ctx, p.delete, streamID); err != nil {
		return fmt.Errorf("snapshot: delete stream %q: %w", streamID, err)
	}
	return nil
}
