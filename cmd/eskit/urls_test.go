package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/internal/infra/testsvc"
)

// TestServiceURLsRequired: with neither flag nor environment naming a
// service, a command that needs it refuses to guess (exit 2), naming the
// flag and the variable, before it connects to anything.
func TestServiceURLsRequired(t *testing.T) {
	noServices(t)
	const (
		unreachablePG = "postgres://postgres@127.0.0.1:1/x?connect_timeout=2"
		unreachableRD = "redis://127.0.0.1:1/0"
		noPG          = "no PostgreSQL URL: set -postgres-url or ESKIT_POSTGRES_URL"
		noRedis       = "no Redis URL: set -redis-url or ESKIT_REDIS_URL"
		noNATS        = "no NATS URL: set -nats-url or ESKIT_NATS_URL"
	)
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"migrate"}, noPG},
		{[]string{"migrate", "status", "-json"}, noPG},
		{[]string{"streams", "list"}, noPG},
		{[]string{"streams", "show", "account-1"}, noPG},
		{[]string{"tail", "-from", "0-0"}, noPG},
		{[]string{"relay", "status"}, noPG},
		{[]string{"relay", "-nats-url", "nats://127.0.0.1:1"}, noPG},
		// The relay checks both URLs before it connects to PostgreSQL.
		{[]string{"relay", "-postgres-url", unreachablePG}, noNATS},
		{[]string{"projections", "status", "-no-store"}, noRedis},
		{[]string{"projections", "status", "-postgres-url", unreachablePG}, noRedis},
		{[]string{"projections", "rebuild", "stock", "-no-store"}, noRedis},
		{[]string{"projections", "parked", "list", "stock"}, noRedis},
		{[]string{"projections", "parked", "retry", "stock"}, noRedis},
		{[]string{"projections", "parked", "skip", "stock"}, noRedis},
		// Status and rebuild read the store's head unless told not to.
		{[]string{"projections", "status", "-redis-url", unreachableRD}, noPG + ", or pass -no-store"},
		{[]string{"projections", "rebuild", "stock", "-redis-url", unreachableRD}, noPG + ", or pass -no-store"},
	} {
		code, out, errOut := eskit(t, tc.args...)
		require.Equal(t, 2, code, "%v: %s", tc.args, errOut)
		require.Empty(t, out, tc.args)
		require.Contains(t, errOut, tc.err, tc.args)
		require.NotContains(t, errOut, "cannot reach", tc.args)
	}

	// The environment names the server when the flag does not; the flag
	// wins over it.
	url := testsvc.Database(t)
	t.Setenv(envPostgresURL, url)
	code, out, errOut := eskit(t, "migrate", "status")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "pending")
	t.Setenv(envPostgresURL, unreachablePG)
	code, out, errOut = eskit(t, "migrate", "status", "-postgres-url", url)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "pending")
	code, _, errOut = eskit(t, "migrate", "status")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "cannot reach PostgreSQL at 127.0.0.1:1")

	// The URL from the environment is not a flag default, so -h never
	// shows a password it holds.
	t.Setenv(envPostgresURL, "postgres://ops:s3cret@db.example:5432/prod")
	t.Setenv(envRedisURL, "redis://:s3cret@cache.example:6379/0")
	for _, args := range [][]string{{"migrate", "-h"}, {"projections", "status", "-h"}, {"relay", "status", "-h"}} {
		code, _, errOut = eskit(t, args...)
		require.Equal(t, 0, code, args)
		require.Contains(t, errOut, "ESKIT_POSTGRES_URL", args)
		require.NotContains(t, errOut, "s3cret", args)
	}
}

// TestBenchURL: the bench alone may use the local servers, and says so.
func TestBenchURL(t *testing.T) {
	noServices(t)
	var errOut bytes.Buffer
	c := &cli{stderr: &errOut}
	require.Equal(t, "postgres://flag", benchURL(c, "PostgreSQL", "postgres://flag", "postgres-url", envPostgresURL, benchPostgresURL))
	t.Setenv(envPostgresURL, "postgres://env")
	require.Equal(t, "postgres://env", benchURL(c, "PostgreSQL", "", "postgres-url", envPostgresURL, benchPostgresURL))
	require.Empty(t, errOut.String())

	require.Equal(t, benchRedisURL, benchURL(c, "Redis", "", "redis-url", envRedisURL, benchRedisURL))
	require.Equal(t, "eskit bench: neither -redis-url nor ESKIT_REDIS_URL is set: using the local Redis at redis://127.0.0.1:6379/0\n", errOut.String())
}
