package main

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestParseArgs: flags before, between and after positional arguments;
// `--` ends the flags, unless it is a flag's value.
func TestParseArgs(t *testing.T) {
	type got struct {
		pos     []string
		prefix  string
		json    bool
		streams []string
	}
	for _, tc := range []struct {
		args []string
		want got
	}{
		{nil, got{}},
		{[]string{"-prefix", "p:", "stock"}, got{pos: []string{"stock"}, prefix: "p:"}},
		{[]string{"stock", "-prefix", "p:"}, got{pos: []string{"stock"}, prefix: "p:"}},
		{[]string{"a", "-json", "b", "--prefix=x", "c"}, got{pos: []string{"a", "b", "c"}, prefix: "x", json: true}},
		{[]string{"-json=false", "a"}, got{pos: []string{"a"}}},
		{[]string{"-stream", "s-1", "a", "-stream", "s-2"}, got{pos: []string{"a"}, streams: []string{"s-1", "s-2"}}},
		{[]string{"a", "-"}, got{pos: []string{"a", "-"}}},
		// After `--` everything is positional.
		{[]string{"-json", "--", "-odd", "-prefix", "y"}, got{pos: []string{"-odd", "-prefix", "y"}, json: true}},
		{[]string{"a", "--", "--", "b"}, got{pos: []string{"a", "--", "b"}}},
		{[]string{"a", "--"}, got{pos: []string{"a"}}},
		// "--" as a flag's value ends nothing.
		{[]string{"-prefix", "--", "a", "-json"}, got{pos: []string{"a"}, prefix: "--", json: true}},
		{[]string{"-prefix", "--", "--", "-json"}, got{pos: []string{"-json"}, prefix: "--"}},
		{[]string{"a", "-prefix", "-json", "--", "-b"}, got{pos: []string{"a", "-b"}, prefix: "-json"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			var g got
			fs.StringVar(&g.prefix, "prefix", "", "")
			fs.BoolVar(&g.json, "json", false, "")
			fs.Var((*stringList)(&g.streams), "stream", "")
			pos, err := parseArgs(fs, tc.args)
			require.NoError(t, err)
			g.pos = pos
			require.Equal(t, tc.want, g)
		})
	}

	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Bool("json", false, "")
	_, err := parseArgs(fs, []string{"a", "-nope"})
	var ue *usageError
	require.True(t, errors.As(err, &ue), "%v", err)
	require.Contains(t, err.Error(), "-nope")
	_, err = parseArgs(fs, []string{"a", "-h"})
	require.ErrorIs(t, err, flag.ErrHelp)
	require.Error(t, noArgs(fs, []string{"-json", "extra"}))
	require.NoError(t, noArgs(fs, []string{"-json"}))
}

// TestFlagsAfterNames runs every subcommand with its flags after its
// positional arguments (and before them) against unreachable servers: the
// command gets past its arguments to the connection, which fails (exit 1)
// at the address the flags named, instead of a usage error (exit 2).
// Other tests run the same orders against real services.
func TestFlagsAfterNames(t *testing.T) {
	noServices(t)
	const (
		pg    = "postgres://postgres@127.0.0.1:1/x?connect_timeout=2"
		rdb   = "redis://127.0.0.1:1/0?max_retries=-1" // fail at the first refused dial
		natsU = "nats://127.0.0.1:1"
		pgErr = "cannot reach PostgreSQL at 127.0.0.1:1"
		rdErr = "cannot reach Redis"
	)
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"migrate", "status", "-json", "-postgres-url", pg}, pgErr},
		{[]string{"migrate", "-json", "status", "-postgres-url", pg}, pgErr},
		{[]string{"migrate", "-postgres-url", pg, "apply", "-schema", "ops"}, pgErr},
		{[]string{"streams", "list", "-prefix", "account-", "-postgres-url", pg}, pgErr},
		{[]string{"streams", "show", "account-1", "-from", "2", "-json", "-postgres-url", pg}, pgErr},
		{[]string{"streams", "show", "-from", "2", "account-1", "-postgres-url", pg}, pgErr},
		{[]string{"streams", "show", "-postgres-url", pg, "--", "-dash-id"}, pgErr},
		{[]string{"tail", "-from", "0-0", "-limit", "1", "-postgres-url", pg}, pgErr},
		{[]string{"relay", "-name", "r", "-postgres-url", pg, "-nats-url", natsU}, pgErr},
		{[]string{"relay", "status", "r1", "-json", "-postgres-url", pg}, pgErr},
		{[]string{"relay", "status", "-json", "r1", "-schema", "ops", "r2", "-postgres-url", pg}, pgErr},
		{[]string{"projections", "status", "stock", "-json", "-prefix", "p:", "-no-store", "-redis-url", rdb}, rdErr},
		{[]string{"projections", "status", "-json", "stock", "-no-store", "other", "-redis-url", rdb}, rdErr},
		{[]string{"projections", "status", "stock", "-postgres-url", pg, "-redis-url", rdb}, rdErr},
		{[]string{"projections", "rebuild", "-prefix", "p:", "stock", "-no-store", "-redis-url", rdb}, rdErr},
		{[]string{"projections", "rebuild", "stock", "-prefix", "p:", "-timeout", "1s", "-no-store", "-redis-url", rdb}, rdErr},
		{[]string{"projections", "parked", "list", "stock", "-json", "-prefix", "p:", "-redis-url", rdb}, rdErr},
		{[]string{"projections", "parked", "list", "-prefix", "p:", "stock", "-redis-url", rdb}, rdErr},
		{[]string{"projections", "parked", "retry", "stock", "-stream", "a-1", "-stream", "a-2", "-redis-url", rdb}, rdErr},
		{[]string{"projections", "parked", "skip", "-id", "0190b8a0-0000-7000-8000-000000000001", "stock", "-json", "-redis-url", rdb}, rdErr},
	} {
		code, _, errOut := eskit(t, tc.args...)
		require.Equal(t, 1, code, "%v: %s", tc.args, errOut)
		require.Contains(t, errOut, tc.err, tc.args)
	}

	// A wrong number of names, or names where none is taken, is still a
	// usage error wherever the flags are.
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"projections", "rebuild", "-prefix", "p:", "a", "b", "-redis-url", rdb}, "want one projection name, got 2"},
		{[]string{"projections", "parked", "list", "-redis-url", rdb}, "want one projection name, got 0"},
		{[]string{"streams", "show", "-json", "-postgres-url", pg}, "want one stream ID, got 0"},
		{[]string{"streams", "list", "account-", "-postgres-url", pg}, `unexpected argument "account-"`},
		{[]string{"migrate", "status", "-json", "apply", "-postgres-url", pg}, `unexpected argument "apply"`},
		{[]string{"migrate", "frobnicate", "-postgres-url", pg}, `unexpected argument "frobnicate"`},
		{[]string{"tail", "-limit", "1", "extra", "-postgres-url", pg}, `unexpected argument "extra"`},
		{[]string{"relay", "-name", "r", "extra", "-postgres-url", pg, "-nats-url", natsU}, `unexpected argument "extra"`},
		{[]string{"relay", "-name", "r", "status"}, "`status` comes right after `relay`"},
		{[]string{"bench", "-cases", "import", "extra"}, `unexpected argument "extra"`},
		{[]string{"version", "extra", "-json"}, `unexpected argument "extra"`},
		{[]string{"streams", "show", "account-1", "-nope", "-postgres-url", pg}, "flag provided but not defined: -nope"},
	} {
		code, _, errOut := eskit(t, tc.args...)
		require.Equal(t, 2, code, "%v: %s", tc.args, errOut)
		require.Contains(t, errOut, tc.err, tc.args)
	}

	code, out, errOut := eskit(t, "version", "-json")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, `"version"`)
}

// noServices unsets the environment that names the services, so that a
// test sees only the URLs it passes.
func noServices(t *testing.T) {
	t.Helper()
	for _, env := range []string{envPostgresURL, envRedisURL, envNATSURL} {
		t.Setenv(env, "")
	}
}
