package outbox

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/lease"
)

// ErrNotLeader reports that the relay no longer holds its lease: its
// checkpoint write was refused. The refusal also matches lease.ErrLost
// (and lease.ErrFenced when the lease store refused the write).
var ErrNotLeader = errors.New("outbox: relay is not the leader")

// session is a leader's checkpoint, written on a dedicated connection
// under its lease.
type session struct {
	conn  *pgx.Conn
	table string
	name  string
	held  *lease.Held
	guard string // the lease predicate on $4 (name) and $5 (token)
	check string // SELECT of the lease predicate on $1 and $2
}

// acquire connects a dedicated connection (taken out of the pool) for the
// checkpoint writes.
func acquire(ctx context.Context, pool *pgxpool.Pool) (*pgx.Conn, error) {
	c, err := pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	return c.Hijack(), nil
}

// lease returns the held lease, or ErrNotLeader when the holder's own
// checks (its context, its deadline) say it is gone.
func (s *session) lease(what string) (lease.Lease, error) {
	l := s.held.Lease()
	if err := s.held.Err(); err != nil {
		return l, notLeader(what, l, err)
	}
	return l, nil
}

// Check reports whether the lease still holds, by the holder's deadline
// and by the lease table.
func (s *session) Check(ctx context.Context) error {
	what := fmt.Sprintf("check the lease of relay %q", s.name)
	l, err := s.lease(what)
	if err != nil {
		return err
	}
	var ok bool
	if err := s.conn.QueryRow(ctx, s.check, l.Name, int64(l.Token)).Scan(&ok); err != nil {
		return fmt.Errorf("outbox: %s: %w", what, err)
	}
	if !ok {
		return notLeader(what, l, lease.Fenced(l, "the lease table has another holder, or the lease expired"))
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
	if _, err := s.lease(fmt.Sprintf("read checkpoint %q", s.name)); err != nil {
		return eventstore.Position{}, err
	}
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

// Save moves the checkpoint to pos. It first checks the holder's own
// deadline (Held.Err), then writes with the lease's check in the same
// statement (the lease's name, token and expiry by the server's clock,
// with FOR SHARE on its row, so that no takeover commits in between): a
// relay that lost its lease cannot write, and gets ErrNotLeader, or a
// connection error.
func (s *session) Save(ctx context.Context, pos eventstore.Position) error {
	what := fmt.Sprintf("write checkpoint %q", s.name)
	l, err := s.lease(what)
	if err != nil {
		return err
	}
	tag, err := s.conn.Exec(ctx, `UPDATE `+s.table+` SET pos_tx = $2, pos_seq = $3, updated_at = now()
		WHERE name = $1 AND `+s.guard,
		s.name, int64(pos.Tx), int64(pos.Seq), l.Name, int64(l.Token))
	if err != nil {
		return fmt.Errorf("outbox: %s: %w", what, err)
	}
	if tag.RowsAffected() != 1 {
		return notLeader(what, l, lease.Fenced(l, "the lease table has another holder, or the lease expired"))
	}
	return nil
}

// Close closes the connection.
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
