// Package testsvc gives tests their own PostgreSQL database and Redis key
// prefix on the services named by ESKIT_POSTGRES_URL and ESKIT_REDIS_URL
// (local defaults otherwise), and removes them when the test ends.
package testsvc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/eskit/eskit/eventstore"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

// Default service addresses, used when the environment names none.
const (
	DefaultPostgresURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	DefaultRedisURL    = "redis://127.0.0.1:6379/0"
)

// PostgresURL returns ESKIT_POSTGRES_URL or the local default.
func PostgresURL() string {
	if u := os.Getenv("ESKIT_POSTGRES_URL"); u != "" {
		return u
	}
	return DefaultPostgresURL
}

// RedisURL returns ESKIT_REDIS_URL or the local default.
func RedisURL() string {
	if u := os.Getenv("ESKIT_REDIS_URL"); u != "" {
		return u
	}
	return DefaultRedisURL
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
		tb.Fatalf("testsvc: connect to PostgreSQL at %s: %v (is it running? make test starts it)", PostgresURL(), err)
	}
	defer admin.Close(ctx)
	name := Name("eskit_test")
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("testsvc: create database: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, PostgresURL())
		if err != nil {
			tb.Errorf("testsvc: drop database %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("testsvc: drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(PostgresURL())
	if err != nil {
		tb.Fatalf("testsvc: parse %s: %v", PostgresURL(), err)
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
		tb.Fatalf("testsvc: %v", err)
	}
	if cfg.MaxConns < 40 {
		cfg.MaxConns = 40
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("testsvc: open pool: %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// Redis returns a client for ESKIT_REDIS_URL and a fresh key prefix (ending
// in ":"); every key under the prefix is deleted when tb ends.
func Redis(tb testing.TB) (*redis.Client, string) {
	tb.Helper()
	opt, err := redis.ParseURL(RedisURL())
	if err != nil {
		tb.Fatalf("testsvc: %v", err)
	}
	c := redis.NewClient(opt)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		tb.Fatalf("testsvc: Redis at %s: %v (is it running? make test starts it)", RedisURL(), err)
	}
	prefix := Name("eskit_test") + ":"
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := DeletePrefix(ctx, c, prefix); err != nil {
			tb.Errorf("testsvc: clean Redis prefix %s: %v", prefix, err)
		}
		_ = c.Close()
	})
	return c, prefix
}

// DeletePrefix deletes every key that starts with prefix.
func DeletePrefix(ctx context.Context, c redis.UniversalClient, prefix string) error {
	if prefix == "" || strings.ContainsAny(prefix, "*?[") {
		return fmt.Errorf("testsvc: refusing to delete keys matching %q", prefix)
	}
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 1000 {
			if err := c.Del(ctx, batch...).Err(); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	if err := iter.Err(); err != nil {
		return err
	}
	if len(batch) > 0 {
		return c.Del(ctx, batch...).Err()
	}
	return nil
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
				tb.Fatalf("testsvc: feed lag: %v", err)
			}
			if lag.Events == 0 {
				break
			}
			select {
			case <-ctx.Done():
				tb.Fatalf("testsvc: the feed still holds back %d committed events", lag.Events)
			case <-time.After(2 * time.Millisecond):
			}
		}
	}
	head, err := feed.Head(ctx)
	if err != nil {
		tb.Fatalf("testsvc: head: %v", err)
	}
	return head
}
