package outbox

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/eventstore"
)

// ErrNotLeader reports that the relay no longer holds its leader lock: its
// checkpoint write was refused.
var ErrNotLeader = errors.New("outbox: relay is not the leader")

// lockClass is the first key of the relay's two-key advisory lock. The
// two-key space never collides with the single bigint keys the event store
// locks streams with.
const lockClass int32 = 0x65736b6f // "esko"

// lockKey is the second key: a hash of the schema and relay name.
func lockKey(schema, name string) int32 {
	h := fnv.New32a()
	h.Write([]byte("eskit.outbox/" + schema + "/" + name))
	return int32(h.Sum32() & 0x7fffffff)
}

// session is a leader's dedicated connection, which holds the lock.
type session struct {
	conn   *pgx.Conn
	table  string
	name   string
	object int32
}

// acquire connects a dedicated connection (taken out of the pool) for the
// lock.
func acquire(ctx context.Context, pool *pgxpool.Pool) (*pgx.Conn, error) {
	c, err := pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	return c.Hijack(), nil
}

// tryLock tries to take the leader lock on conn, without waiting.
func tryLock(ctx context.Context, conn *pgx.Conn, object int32) (bool, error) {
	var ok bool
	err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1::int4, $2::int4)`, lockClass, object).Scan(&ok)
	return ok, err
}

// holdsLock is the condition, true only on the connection holding the lock,
// that guards every checkpoint write.
const holdsLock = `EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
	AND pid = pg_backend_pid() AND classid = $%d::int4::oid AND objid = $%d::int4::oid AND objsubid = 2)`

// Check reports whether the session's connection still holds the lock.
func (s *session) Check(ctx context.Context) error {
	var ok bool
	if err := s.conn.QueryRow(ctx, `SELECT `+fmt.Sprintf(holdsLock, 1, 2), lockClass, s.object).Scan(&ok); err != nil {
		return fmt.Errorf("outbox: check leader lock: %w", err)
	}
	if !ok {
		return ErrNotLeader
	}
	return nil
}

// Load returns the checkpoint, creating its row when missing. It also
// turns off the commit flush for the session's checkpoint writes: a
// checkpoint lost in a PostgreSQL crash only makes the next leader publish
// again what JetStream's duplicate window and idempotent consumers absorb,
// while a flush per write would stall publishing once per batch. (The
// connection is the session's own; it never returns to the pool.)
func (s *session) Load(ctx context.Context) (eventstore.Position, error) {
	if _, err := s.conn.Exec(ctx, `SET synchronous_commit = off`); err != nil {
		return eventstore.Position{}, fmt.Errorf("outbox: configure checkpoint session: %w", err)
	}
	if _, err := s.conn.Exec(ctx, `INSERT INTO `+s.table+` (name) VALUES ($1) ON CONFLICT (name) DO NOTHING`, s.name); err != nil {
		return eventstore.Position{}, fmt.Errorf("outbox: create checkpoint %q: %w", s.name, err)
	}
	var tx, seq int64
	if err := s.conn.QueryRow(ctx, `SELECT pos_tx, pos_seq FROM `+s.table+` WHERE name = $1`, s.name).Scan(&tx, &seq); err != nil {
		return eventstore.Position{}, fmt.Errorf("outbox: read checkpoint %q: %w", s.name, err)
	}
	return eventstore.Position{Tx: uint64(tx), Seq: uint64(seq)}, nil
}

// Save moves the checkpoint to pos. It runs on the lock's connection and
// checks the lock in the same statement, so a relay that lost the lock (or
// its connection) cannot write it: it gets ErrNotLeader or a connection
// error.
func (s *session) Save(ctx context.Context, pos eventstore.Position) error {
	tag, err := s.conn.Exec(ctx, `UPDATE `+s.table+` SET pos_tx = $2, pos_seq = $3, updated_at = now()
		WHERE name = $1 AND `+fmt.Sprintf(holdsLock, 4, 5),
		s.name, int64(pos.Tx), int64(pos.Seq), lockClass, s.object)
	if err != nil {
		return fmt.Errorf("outbox: write checkpoint %q: %w", s.name, err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("outbox: write checkpoint %q: %w", s.name, ErrNotLeader)
	}
	return nil
}

// Close closes the connection, which releases the lock.
func (s *session) Close(ctx context.Context) {
	_ = s.conn.Close(ctx)
}

// ReadCheckpoint returns the stored checkpoint of the relay called name in
// schema (the zero Position when it has none).
func ReadCheckpoint(ctx context.Context, pool *pgxpool.Pool, schema, name string) (eventstore.Position, error) {
	var tx, seq int64
	err := pool.QueryRow(ctx, `SELECT pos_tx, pos_seq FROM `+checkpointTable(schema)+` WHERE name = $1`, name).Scan(&tx, &seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return eventstore.Position{}, nil
	}
	if err != nil {
		return eventstore.Position{}, fmt.Errorf("outbox: read checkpoint %q: %w", name, err)
	}
	return eventstore.Position{Tx: uint64(tx), Seq: uint64(seq)}, nil
}

func checkpointTable(schema string) string {
	return pgx.Identifier{schema, "checkpoints"}.Sanitize()
}
