package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/eventstore/pgstore"
)

// pgFlags are the flags of every command that talks to PostgreSQL.
type pgFlags struct {
	url    string
	schema string
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func (p *pgFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.url, "postgres-url", envOr("ESKIT_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"),
		"PostgreSQL connection URL (env ESKIT_POSTGRES_URL)")
	fs.StringVar(&p.schema, "schema", envOr("ESKIT_SCHEMA", pgstore.DefaultSchema), "eskit schema (env ESKIT_SCHEMA)")
}

// pool connects and checks the connection, so that a bad URL or an
// unreachable server is reported at once and clearly.
func (p *pgFlags) pool(ctx context.Context) (*pgxpool.Pool, error) {
	if err := pgstore.ValidateSchema(p.schema); err != nil {
		return nil, &usageError{msg: err.Error()}
	}
	cfg, err := pgxpool.ParseConfig(p.url)
	if err != nil {
		return nil, &usageError{msg: fmt.Sprintf("bad PostgreSQL URL: %v", err)}
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("cannot reach PostgreSQL at %s:%d: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	return pool, nil
}

// store opens the event store on a migrated schema.
func (p *pgFlags) store(ctx context.Context) (*pgstore.Store, *pgxpool.Pool, error) {
	pool, err := p.pool(ctx)
	if err != nil {
		return nil, nil, err
	}
	s, err := pgstore.New(ctx, pool, pgstore.WithSchema(p.schema))
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	return s, pool, nil
}
