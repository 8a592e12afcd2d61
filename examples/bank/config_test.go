package main

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The embedded mode listens on loopback unless told otherwise; real
// services on every interface (behind the operator's network).
func TestListenAddressDefaults(t *testing.T) {
	c, err := parse(nil, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:8080", c.addr)
	c, err = parse([]string{"-addr", ":9000"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, ":9000", c.addr)
	c, err = parse([]string{"-postgres", "postgres://x/y"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, ":8080", c.addr)
}

// A NATS URL's password never appears in an error.
func TestNATSPasswordNotInErrors(t *testing.T) {
	var s services
	err := s.connectNATS(context.Background(), "nats://bank:s3cret@127.0.0.1:1")
	require.Error(t, err)
	require.False(t, strings.Contains(err.Error(), "s3cret"), "error leaks the password: %v", err)
}

// One -prefix names the bank in NATS and Redis; -subject-prefix and
// -redis-prefix set one apart.
func TestPrefixFlags(t *testing.T) {
	c, err := parse(nil, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "bank", c.subjectPrefix)
	require.Equal(t, "bank", c.redisPrefix)
	c, err = parse([]string{"-prefix", "acme"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "acme", c.subjectPrefix)
	require.Equal(t, "acme", c.redisPrefix)
	c, err = parse([]string{"-prefix", "acme", "-redis-prefix", "legacy:"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "acme", c.subjectPrefix)
	require.Equal(t, "legacy:", c.redisPrefix)
	_, err = parse([]string{"-prefix", "a.b"}, io.Discard)
	require.Error(t, err, "a subject prefix is one token")
}

// -readmodels (ESKIT_READMODELS) keeps the read models in Redis, the
// default when Redis is configured or embedded, or in PostgreSQL, the
// default when only PostgreSQL is; PostgreSQL read models use no Redis.
func TestReadModelsFlag(t *testing.T) {
	t.Setenv(envReadModels, "")
	cases := []struct {
		args  []string
		want  string
		redis string
	}{
		{nil, readModelsRedis, ""},
		{[]string{"-postgres", "postgres://x/y", "-redis", "redis://r"}, readModelsRedis, "redis://r"},
		{[]string{"-postgres", "postgres://x/y"}, readModelsPostgres, ""},
		{[]string{"-postgres", "postgres://x/y", "-redis", "redis://r", "-readmodels", "postgres"}, readModelsPostgres, ""},
		{[]string{"-postgres", "postgres://x/y", "-readmodels", "redis"}, readModelsRedis, ""},
	}
	for _, tc := range cases {
		c, err := parse(tc.args, io.Discard)
		require.NoError(t, err, "%v", tc.args)
		require.Equal(t, tc.want, c.readModels, "%v", tc.args)
		require.Equal(t, tc.redis, c.redis, "%v", tc.args)
	}
	_, err := parse([]string{"-readmodels", "postgres"}, io.Discard)
	require.ErrorContains(t, err, "needs PostgreSQL")
	_, err = parse([]string{"-postgres", "postgres://x/y", "-readmodels", "<script>"}, io.Discard)
	require.ErrorContains(t, err, "want redis or postgres")

	t.Setenv(envReadModels, "postgres")
	c, err := parse([]string{"-postgres", "postgres://x/y", "-redis", "redis://r"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, readModelsPostgres, c.readModels)
}
