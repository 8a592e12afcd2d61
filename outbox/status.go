package outbox

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/eventstore"
)

// RelayStatus is what PostgreSQL holds about the relays of one name: their
// checkpoint and whether one of them leads now.
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
	// row).
	CheckpointAt time.Time
	// Leader reports whether a relay holds the leader lock now, and
	// LeaderPID is the PostgreSQL backend PID of the lock's connection (0
	// when none leads), to look up in pg_stat_activity.
	Leader    bool
	LeaderPID int32
}

// ReadStatus reads the state of the relays called name in schema from
// PostgreSQL: their checkpoint row in <schema>.checkpoints and the holder of
// their leader lock (the session advisory lock NewPostgresCheckpoints
// takes). It only reads, in one statement, and works while no relay runs.
// Relays elected by other Checkpoints (WithCheckpoints) are not seen.
func ReadStatus(ctx context.Context, pool *pgxpool.Pool, schema, name string) (RelayStatus, error) {
	var (
		st       RelayStatus
		tx, seq  *int64
		at       *time.Time
		isLeader bool
	)
	err := pool.QueryRow(ctx, `SELECT l.pid IS NOT NULL, coalesce(l.pid, 0), c.pos_tx, c.pos_seq, c.updated_at
		FROM (SELECT 1) AS one
		LEFT JOIN `+checkpointTable(schema)+` AS c ON c.name = $1
		LEFT JOIN LATERAL (
			SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
			AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
			AND classid = $2::int4::oid AND objid = $3::int4::oid AND objsubid = 2
			LIMIT 1) AS l ON true`,
		name, lockClass, lockKey(schema, name)).Scan(&isLeader, &st.LeaderPID, &tx, &seq, &at)
	if err != nil {
		return RelayStatus{}, fmt.Errorf("outbox: read status of relay %q: %w", name, err)
	}
	st.Leader = isLeader
	if tx != nil && seq != nil && at != nil {
		st.HasCheckpoint = true
		st.Checkpoint = eventstore.Position{Tx: uint64(*tx), Seq: uint64(*seq)}
		st.CheckpointAt = *at
	}
	return st, nil
}
