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
