// Package pgtest gives tests their own PostgreSQL database on the server
// named by ESKIT_POSTGRES_URL (a local default otherwise), and drops it when
// the test ends. It needs nothing but pgx, so a module's tests can use it
// without adding to its users' build lists.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/eventstore"
)

// DefaultPostgresURL is used when the environment names no server.
const DefaultPostgresURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// PostgresURL returns ESKIT_POSTGRES_URL or the local default.
func PostgresURL() string {
	if u := os.Getenv("ESKIT_POSTGRES_URL"); u != "" {
		return u
	}
	return DefaultPostgresURL
}

// Name returns a fresh lower-case identifier with the given prefix.
func Name(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + "_" + hex.EncodeToString(b[:])
}

// Database creates a fresh database, drops it (terminating its connections)
// when tb ends, and returns its connection URL.
func Database(tb testing.TB) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, PostgresURL())
	if err != nil {
		tb.Fatalf("pgtest: connect to PostgreSQL at %s: %v (is it running? make test starts it)", PostgresURL(), err)
	}
	defer admin.Close(ctx)
	name := Name("eskit_test")
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("pgtest: create database: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, PostgresURL())
		if err != nil {
			tb.Errorf("pgtest: drop database %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(PostgresURL())
	if err != nil {
		tb.Fatalf("pgtest: parse %s: %v", PostgresURL(), err)
	}
	u.Path = "/" + name
	return u.String()
}

// Pool opens a pool on a fresh database (see Database) and closes it when tb
// ends.
func Pool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	return PoolFor(tb, Database(tb))
}

// PoolFor opens a pool on connURL and closes it when tb ends.
func PoolFor(tb testing.TB, connURL string) *pgxpool.Pool {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(connURL)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	if cfg.MaxConns < 40 {
		cfg.MaxConns = 40
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("pgtest: open pool: %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// feedLagger is implemented by stores whose feed can trail their commits.
type feedLagger interface {
	FeedLag(ctx context.Context) (eventstore.FeedLag, error)
}

// SettledHead waits until every committed event is visible on the feed and
// returns the feed's head. PostgreSQL's safe point is cluster-wide: a
// transaction of any other test, in any database, holds it back for a
// moment, so a head read straight after an append may still lie before it.
func SettledHead(tb testing.TB, feed eventstore.FeedReader) eventstore.Position {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if l, ok := feed.(feedLagger); ok {
		for {
			lag, err := l.FeedLag(ctx)
			if err != nil {
				tb.Fatalf("pgtest: feed lag: %v", err)
			}
			if lag.Events == 0 {
				break
			}
			select {
			case <-ctx.Done():
				tb.Fatalf("pgtest: the feed still holds back %d committed events", lag.Events)
			case <-time.After(2 * time.Millisecond):
			}
		}
	}
	head, err := feed.Head(ctx)
	if err != nil {
		tb.Fatalf("pgtest: head: %v", err)
	}
	return head
}
