package pgstore

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/eventstore"
)

// DefaultSchema is the PostgreSQL schema the store uses unless WithSchema
// names another.
const DefaultSchema = "eskit"

// MaxSchemaLength is the longest schema name accepted: the store derives a
// notification channel name from it, and PostgreSQL identifiers end at 63
// bytes.
const MaxSchemaLength = 56

var schemaRE = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// ValidateSchema checks that name is a plain lower-case PostgreSQL
// identifier (letters, digits and underscores, not starting with a digit) of
// at most MaxSchemaLength bytes, so that it never needs quoting rules.
func ValidateSchema(name string) error {
	switch {
	case name == "":
		return &eventstore.InvalidArgumentError{Field: "schema", Reason: "empty"}
	case len(name) > MaxSchemaLength:
		return &eventstore.InvalidArgumentError{Field: "schema", Reason: fmt.Sprintf("%d bytes, limit %d", len(name), MaxSchemaLength)}
	case !schemaRE.MatchString(name):
		return &eventstore.InvalidArgumentError{Field: "schema", Reason: fmt.Sprintf("%q is not a lower-case identifier ([a-z_][a-z0-9_]*)", name)}
	case strings.HasPrefix(name, "pg_"):
		return &eventstore.InvalidArgumentError{Field: "schema", Reason: "names starting with pg_ are reserved"}
	}
	return nil
}

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migration is one versioned schema change.
type Migration struct {
	// Version numbers migrations from 1 in the order they apply.
	Version int
	// Name is the migration's file name without the version and extension.
	Name string
	// AppliedAt is when the migration ran (zero while pending).
	AppliedAt time.Time
}

// Status lists the applied and pending migrations of a schema.
type Status struct {
	Applied []Migration
	Pending []Migration
}

// UpToDate reports whether no migration is pending.
func (s Status) UpToDate() bool { return len(s.Pending) == 0 }

type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in version order.
func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("pgstore: read migrations: %w", err)
	}
	var out []migration
	for _, e := range entries {
		base, ok := strings.CutSuffix(e.Name(), ".sql")
		if !ok {
			continue
		}
		num, name, _ := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("pgstore: migration file %q: want <version>_<name>.sql", e.Name())
		}
		body, err := migrationFiles.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, fmt.Errorf("pgstore: read migration %q: %w", e.Name(), err)
		}
		out = append(out, migration{version: v, name: name, sql: string(body)})
	}
	slices.SortFunc(out, func(a, b migration) int { return a.version - b.version })
	for i, m := range out {
		if m.version != i+1 {
			return nil, fmt.Errorf("pgstore: migrations are not numbered 1..n (found %d at place %d)", m.version, i+1)
		}
	}
	return out, nil
}

// render substitutes the schema placeholders of a migration.
func render(sql, schema string) string {
	return strings.NewReplacer(
		"{{schema}}", quoteIdent(schema),
		"{{schema_literal}}", "'"+schema+"'",
	).Replace(sql)
}

func quoteIdent(name string) string { return `"` + name + `"` }

// lockKey is the advisory lock key that serialises migrations of a schema.
const lockKeySQL = `hashtextextended('eskit.pgstore.migrate/' || $1, 0)`

// Migrate brings schema up to date: it creates the schema if needed and
// applies every pending migration, each in its own transaction, recording it
// in <schema>.schema_migrations. It is idempotent and safe to run from
// several processes at once: a session-level advisory lock keyed on the
// schema name serialises the runs.
func Migrate(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	if err := ValidateSchema(schema); err != nil {
		return err
	}
	ms, err := migrations()
	if err != nil {
		return err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("pgstore: migrate %s: %w", schema, err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock("+lockKeySQL+")", schema); err != nil {
		conn.Release()
		return fmt.Errorf("pgstore: migrate %s: take lock: %w", schema, err)
	}
	defer func() {
		// The lock belongs to the session: if it cannot be released, the
		// connection must not go back to the pool holding it.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, "SELECT pg_advisory_unlock("+lockKeySQL+")", schema); err != nil {
			_ = conn.Hijack().Close(uctx)
			return
		}
		conn.Release()
	}()

	q := quoteIdent(schema)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+q+`;
CREATE TABLE IF NOT EXISTS `+q+`.schema_migrations (
    version int PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("pgstore: migrate %s: create schema: %w", schema, err)
	}
	applied, err := appliedMigrations(ctx, conn.Conn(), schema)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if _, ok := applied[m.version]; ok {
			continue
		}
		err := pgx.BeginFunc(ctx, conn.Conn(), func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, render(m.sql, schema)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO "+q+".schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name)
			return err
		})
		if err != nil {
			return fmt.Errorf("pgstore: migrate %s: apply %d_%s: %w", schema, m.version, m.name, err)
		}
	}
	return nil
}

func appliedMigrations(ctx context.Context, conn *pgx.Conn, schema string) (map[int]Migration, error) {
	rows, err := conn.Query(ctx, "SELECT version, name, applied_at FROM "+quoteIdent(schema)+".schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("pgstore: read migrations of %s: %w", schema, err)
	}
	out := make(map[int]Migration)
	for rows.Next() {
		var m Migration
		if err := rows.Scan(&m.Version, &m.Name, &m.AppliedAt); err != nil {
			rows.Close()
			return nil, fmt.Errorf("pgstore: read migrations of %s: %w", schema, err)
		}
		out[m.Version] = m
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgstore: read migrations of %s: %w", schema, err)
	}
	return out, nil
}

// MigrationStatus reports which migrations schema has and which are
// pending. A schema that does not exist has every migration pending.
func MigrationStatus(ctx context.Context, pool *pgxpool.Pool, schema string) (Status, error) {
	if err := ValidateSchema(schema); err != nil {
		return Status{}, err
	}
	ms, err := migrations()
	if err != nil {
		return Status{}, err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return Status{}, fmt.Errorf("pgstore: migration status of %s: %w", schema, err)
	}
	defer conn.Release()
	applied, err := appliedMigrations(ctx, conn.Conn(), schema)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == pgerrcode.UndefinedTable || pgErr.Code == pgerrcode.InvalidSchemaName) {
		applied, err = map[int]Migration{}, nil // no schema or no table yet
	}
	if err != nil {
		return Status{}, err
	}
	var st Status
	for _, m := range ms {
		if a, ok := applied[m.version]; ok {
			st.Applied = append(st.Applied, a)
		} else {
			st.Pending = append(st.Pending, Migration{Version: m.version, Name: m.name})
		}
	}
	return st, nil
}
