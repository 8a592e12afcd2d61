package outbox

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ExpireLease ends the live lease of the relay name in schema in the lease
// table, as if its holder had stopped renewing it a TTL ago (a freeze, a
// partition), and reports whether there was one. The holder does not know
// yet: only its next renewal or guarded write finds out.
func ExpireLease(ctx context.Context, pool *pgxpool.Pool, schema, name string) (bool, error) {
	tag, err := pool.Exec(ctx, `UPDATE `+pgx.Identifier{schema, "leases"}.Sanitize()+`
		SET expires_at = clock_timestamp() WHERE name = $1 AND expires_at > clock_timestamp()`, LeaseName(name))
	return tag.RowsAffected() == 1, err
}

// WithServerVersion makes Run take version for the connected server's (a
// server too old for a feature, say).
func WithServerVersion(version string) Option { return func(c *config) { c.serverVersion = version } }
