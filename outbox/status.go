package outbox

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/lease"
)

// RelayStatus is what PostgreSQL holds about the relays of one name: their
// checkpoint and which of them, if any, holds the lease now.
type RelayStatus struct {
	// HasCheckpoint reports whether the relay has a checkpoint row (a
	// leader creates it); false when no relay of this name and schema has
	// led yet.
	HasCheckpoint bool
	// Checkpoint is the stored checkpoint: every record up to it was
	// published and acknowledged (the zero Position without a row). The
	// leader writes it at most every checkpoint interval, so it may trail
	// the leader's Stats().Position a little.
	Checkpoint eventstore.Position
	// CheckpointAt is when the checkpoint was last written (zero without a
	// row). A leader writes it only when records were published: with a
	// lag, an old CheckpointAt means a stalled leader.
	CheckpointAt time.Time
	// Leader reports whether a relay holds the lease (LeaseName(name) in
	// <schema>.leases) now, by the server's clock.
	Leader bool
	// Lease is that live lease: its holder (host/PID/random, see
	// lease.DefaultHolder), fencing token and expiry by the server's
	// clock; the zero Lease when none leads.
	Lease lease.Lease
}

// ReadStatus reads the state of the relays called name in schema from
// PostgreSQL: their checkpoint row in <schema>.checkpoints and the live
// lease of LeaseName(name) in <schema>.leases. It only reads, in one
// statement, and works while no relay runs. Relays elected by other
// Checkpoints (WithCheckpoints) are not seen.
func ReadStatus(ctx context.Context, pool *pgxpool.Pool, schema, name string) (RelayStatus, error) {
	return readCheckpoint(ctx, pool, schema, name)
}

func readCheckpoint(ctx context.Context, pool *pgxpool.Pool, schema, name string) (RelayStatus, error) {
	var (
		st      RelayStatus
		tx, seq *int64
		at      *time.Time
		holder  *string
		token   *int64
		expires *time.Time
	)
	leases := pgx.Identifier{schema, "leases"}.Sanitize()
	err := pool.QueryRow(ctx, `SELECT l.holder, l.token, l.expires_at, c.pos_tx, c.pos_seq, c.updated_at
		FROM (SELECT 1) AS one
		LEFT JOIN `+checkpointTable(schema)+` AS c ON c.name = $1
		LEFT JOIN `+leases+` AS l ON l.name = $2 AND l.expires_at > clock_timestamp()`,
		name, LeaseName(name)).Scan(&holder, &token, &expires, &tx, &seq, &at)
	if err != nil {
		return RelayStatus{}, fmt.Errorf("outbox: read status of relay %q: %w", name, err)
	}
	if holder != nil && token != nil && expires != nil {
		st.Leader = true
		st.Lease = lease.Lease{Name: LeaseName(name), Holder: *holder, Token: uint64(*token), Expires: *expires}
	}
	if tx != nil && seq != nil && at != nil {
		st.HasCheckpoint = true
		st.Checkpoint = eventstore.Position{Tx: uint64(*tx), Seq: uint64(*seq)}
		st.CheckpointAt = *at
	}
	return st, nil
}
