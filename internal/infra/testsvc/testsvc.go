// Package testsvc gives tests their own PostgreSQL database (see pgtest)
// and Redis key prefix on the services named by ESKIT_POSTGRES_URL and
// ESKIT_REDIS_URL (local defaults otherwise), and removes them when the
// test ends.
package testsvc

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore/pgtest"
)

// Default service addresses, used when the environment names none.
const (
	DefaultPostgresURL = pgtest.DefaultPostgresURL
	DefaultRedisURL    = "redis://127.0.0.1:6379/0"
)

// PostgresURL returns ESKIT_POSTGRES_URL or the local default.
func PostgresURL() string { return pgtest.PostgresURL() }

// RedisURL returns ESKIT_REDIS_URL or the local default.
func RedisURL() string {
	if u := os.Getenv("ESKIT_REDIS_URL"); u != "" {
		return u
	}
	return DefaultRedisURL
}

// Name returns a fresh lower-case identifier with the given prefix.
func Name(prefix string) string { return pgtest.Name(prefix) }

// Database creates a fresh database (see pgtest.Database).
func Database(tb testing.TB) string { tb.Helper(); return pgtest.Database(tb) }

// Pool opens a pool on a fresh database (see pgtest.Pool).
func Pool(tb testing.TB) *pgxpool.Pool { tb.Helper(); return pgtest.Pool(tb) }

// PoolFor opens a pool on connURL (see pgtest.PoolFor).
func PoolFor(tb testing.TB, connURL string) *pgxpool.Pool {
	tb.Helper()
	return pgtest.PoolFor(tb, connURL)
}

// SettledHead waits for the feed to show every commit (see
// pgtest.SettledHead).
func SettledHead(tb testing.TB, feed eventstore.FeedReader) eventstore.Position {
	tb.Helper()
	return pgtest.SettledHead(tb, feed)
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
