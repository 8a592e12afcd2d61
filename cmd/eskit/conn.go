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

// Environment variables naming the services.
const (
	envPostgresURL = "ESKIT_POSTGRES_URL"
	envNATSURL     = "ESKIT_NATS_URL"
	envRedisURL    = "ESKIT_REDIS_URL"
)

// serviceURL is the URL of a service: the flag's value, else the
// environment variable's. The CLI never falls back to a default server: an
// operator who forgot to name one must not read, migrate or publish the
// wrong database, so neither set is a usage error naming both. (The URL is
// not the flag's default either, so that -h never prints a password from
// the environment.)
func serviceURL(what, flagValue, flagName, env string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if v := os.Getenv(env); v != "" {
		return v, nil
	}
	return "", usagef("no %s URL: set -%s or %s", what, flagName, env)
}

func (p *pgFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.url, "postgres-url", "", "PostgreSQL connection URL (default $"+envPostgresURL+"; one of them is required)")
	fs.StringVar(&p.schema, "schema", envOr("ESKIT_SCHEMA", pgstore.DefaultSchema), "eskit schema (env ESKIT_SCHEMA)")
}

// connURL is the PostgreSQL URL: -postgres-url or ESKIT_POSTGRES_URL.
func (p *pgFlags) connURL() (string, error) {
	return serviceURL("PostgreSQL", p.url, "postgres-url", envPostgresURL)
}

// checkStoreURL is for the commands that read the event store unless
// -no-store is set: without it, a PostgreSQL URL is required.
func (p *pgFlags) checkStoreURL(noStore bool) error {
	if noStore {
		return nil
	}
	if _, err := p.connURL(); err != nil {
		return usagef("%v, or pass -no-store", err)
	}
	return nil
}

// pool connects and checks the connection, so that a missing or bad URL
// or an unreachable server is reported at once and clearly.
func (p *pgFlags) pool(ctx context.Context) (*pgxpool.Pool, error) {
	if err := pgstore.ValidateSchema(p.schema); err != nil {
		return nil, &usageError{msg: err.Error()}
	}
	url, err := p.connURL()
	if err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(url)
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
