package outbox

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
)

// LockHolderPID returns the backend PID that holds the leader lock of the
// relay name in schema, or 0 when nobody holds it.
func LockHolderPID(ctx context.Context, pool *pgxpool.Pool, schema, name string) (int32, error) {
	var pid int32
	err := pool.QueryRow(ctx, `SELECT coalesce(max(pid), 0) FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND classid = $1::int4::oid AND objid = $2::int4::oid AND objsubid = 2`, lockClass, lockKey(schema, name)).Scan(&pid)
	return pid, err
}

// WithServerVersion makes Run take version for the connected server's (a
// server too old for a feature, say).
func WithServerVersion(version string) Option { return func(c *config) { c.serverVersion = version } }
