package main

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/cmd/eskit/internal/bench"
	"github.com/eskit/eskit/internal/infra/natstest"
	"github.com/eskit/eskit/internal/infra/testsvc"
)

// TestBenchCommand runs every case of the bench but the cluster cases (see
// TestClusterBenchCommand) at a tiny size and checks the JSON lines.
// project-partitioned starts its runner processes by re-executing this
// test binary (bench.go's init turns it into one).
func TestBenchCommand(t *testing.T) {
	natsURL, _ := natstest.ExternalURL()
	var cases []string
	for _, name := range bench.CaseNames() {
		if !slices.Contains(bench.ClusterCaseNames(), name) {
			cases = append(cases, name)
		}
	}
	args := []string{"bench", "-json", "-cases", strings.Join(cases, ","),
		"-postgres-url", testsvc.PostgresURL(), "-redis-url", testsvc.RedisURL(), "-nats-url", natsURL,
		"-rounds", "2", "-append-concurrency", "1,4", "-append-n", "10", "-append-n-parallel", "20",
		"-append100-n", "4", "-import-n", "400", "-import-batch", "200",
		"-load-events", "300", "-load-snapshot-every", "100", "-load-n", "2",
		"-feed-n", "500", "-feed-page", "100", "-relay-n", "400", "-project-n", "400",
		"-e2e-rate", "200", "-e2e-duration", "250ms", "-http-n", "40", "-http-clients", "4",
		"-partitioned-n", "300",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	code := run(ctx, args, &out, &errOut)
	require.Equal(t, 0, code, errOut.String())

	env, seen := checkBenchLines(t, out.String())
	require.Empty(t, env.Params["redis_cluster"], "no cluster case ran")
	for _, name := range cases {
		require.Positive(t, seen[name], "case %s reported", name)
	}
	require.Equal(t, 4, seen["append-1"], "one line per concurrency, without and with the state cache")
	require.Equal(t, 3, seen["e2e-latency"], "p50, p95, p99")
	require.Equal(t, 4, seen["project-partitioned"], "1 and 3 runners, cold start and settled")

	// Without -json: the versions and a table with the targets.
	code, text, errText := eskit(t, "bench", "-cases", "append-100", "-append100-n", "4", "-rounds", "2",
		"-postgres-url", testsvc.PostgresURL(), "-redis-url", testsvc.RedisURL(), "-nats-url", natsURL)
	require.Equal(t, 0, code, errText)
	require.Contains(t, text, "PostgreSQL ")
	require.Contains(t, text, "CASE")
	require.Contains(t, text, "append-100")
	require.Contains(t, text, "ratio ≥ 0.9")
	// Progress over the cases, as plain lines off a terminal.
	require.Contains(t, errText, "bench: 0/1 cases (0.0%), ")
	require.Contains(t, errText, ", running append-100")
	require.Contains(t, errText, "bench: 1/1 cases (100.0%), ")

	// Bad flags are usage errors.
	code, _, errText = eskit(t, "bench", "-cases", "nope")
	require.Equal(t, 2, code)
	require.Contains(t, errText, `unknown case "nope"`)
	code, _, errText = eskit(t, "bench", "-append-concurrency", "0")
	require.Equal(t, 2, code)
	require.Contains(t, errText, "append-concurrency")
	code, _, errText = eskit(t, "bench", "-partitioned-runners", "1")
	require.Equal(t, 2, code)
	require.Contains(t, errText, "partitioned-runners")
}

// TestClusterBenchCommand runs the cluster cases at a tiny size on the
// throwaway local Redis Cluster the bench starts (redis-server and
// redis-cli must be installed: Debian's redis-server and redis-tools).
func TestClusterBenchCommand(t *testing.T) {
	natsURL, _ := natstest.ExternalURL()
	args := []string{"bench", "-json", "-cases", strings.Join(bench.ClusterCaseNames(), ","),
		"-postgres-url", testsvc.PostgresURL(), "-redis-url", testsvc.RedisURL(), "-nats-url", natsURL,
		"-rounds", "2", "-project-cluster-n", "400",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	code := run(ctx, args, &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	env, seen := checkBenchLines(t, out.String())
	require.Contains(t, env.Params["redis_cluster"], "local, 3 masters + 3 replicas")
	for _, name := range bench.ClusterCaseNames() {
		require.Equal(t, 1, seen[name], "case %s reported", name)
	}

	// An unreachable cluster is an error, not a hang.
	code, _, errText := eskit(t, "bench", "-cases", bench.ClusterCaseNames()[0], "-redis-cluster-url", "redis+cluster://127.0.0.1:1",
		"-postgres-url", testsvc.PostgresURL(), "-redis-url", testsvc.RedisURL(), "-nats-url", natsURL)
	require.Equal(t, 1, code)
	require.Contains(t, errText, "Redis Cluster")
}

// benchLine is one JSON line of `eskit bench -json`.
type benchLine struct {
	Name     string         `json:"name"`
	Unit     string         `json:"unit"`
	Eskit    *float64       `json:"eskit"`
	Baseline *float64       `json:"baseline"`
	Ratio    *float64       `json:"ratio"`
	Params   map[string]any `json:"params"`
}

// checkBenchLines checks the JSON lines of a run and returns the
// environment line and how many lines each case printed. Every result has
// a baseline but e2e-latency's and the one-runner rows of
// project-partitioned (the baseline of the rows with more runners).
func checkBenchLines(t *testing.T, out string) (benchLine, map[string]int) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var env benchLine
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &env))
	require.Equal(t, "environment", env.Name)
	for _, k := range []string{"postgres", "nats", "redis"} {
		require.NotEmpty(t, env.Params[k], k)
	}

	seen := map[string]int{}
	for _, l := range lines[1:] {
		var r benchLine
		require.NoError(t, json.Unmarshal([]byte(l), &r), l)
		require.NotNil(t, r.Eskit, l)
		require.Positive(t, *r.Eskit, l)
		require.NotEmpty(t, r.Unit, l)
		require.Contains(t, r.Params, "peak_memory", l)
		if r.Name != "e2e-latency" && !(r.Name == "project-partitioned" && r.Params["runners"] == 1.0) {
			require.NotNil(t, r.Baseline, l)
			require.NotNil(t, r.Ratio, l)
		}
		seen[r.Name]++
	}
	return env, seen
}
