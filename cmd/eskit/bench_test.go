package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/internal/bench"
	"github.com/eskit/eskit/internal/natstest"
	"github.com/eskit/eskit/internal/testsvc"
)

// TestBenchCommand runs every case of the bench at a tiny size and checks
// the JSON lines.
func TestBenchCommand(t *testing.T) {
	natsURL, _ := natstest.ExternalURL()
	args := []string{"bench", "-json",
		"-postgres-url", testsvc.PostgresURL(), "-redis-url", testsvc.RedisURL(), "-nats-url", natsURL,
		"-rounds", "2", "-append-concurrency", "1,4", "-append-n", "10", "-append-n-parallel", "20",
		"-append100-n", "4", "-import-n", "400", "-import-batch", "200",
		"-load-events", "300", "-load-snapshot-every", "100", "-load-n", "2",
		"-feed-n", "500", "-feed-page", "100", "-relay-n", "400", "-project-n", "400",
		"-e2e-rate", "200", "-e2e-duration", "250ms", "-http-n", "40", "-http-clients", "4",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	code := run(ctx, args, &out, &errOut)
	require.Equal(t, 0, code, errOut.String())

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	type line struct {
		Name     string         `json:"name"`
		Unit     string         `json:"unit"`
		Eskit    *float64       `json:"eskit"`
		Baseline *float64       `json:"baseline"`
		Ratio    *float64       `json:"ratio"`
		Params   map[string]any `json:"params"`
	}
	var env line
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &env))
	require.Equal(t, "environment", env.Name)
	for _, k := range []string{"postgres", "nats", "redis"} {
		require.NotEmpty(t, env.Params[k], k)
	}

	seen := map[string]int{}
	for _, l := range lines[1:] {
		var r line
		require.NoError(t, json.Unmarshal([]byte(l), &r), l)
		require.NotNil(t, r.Eskit, l)
		require.Positive(t, *r.Eskit, l)
		require.NotEmpty(t, r.Unit, l)
		require.Contains(t, r.Params, "peak_memory", l)
		if r.Name != "e2e-latency" {
			require.NotNil(t, r.Baseline, l)
			require.NotNil(t, r.Ratio, l)
		}
		seen[r.Name]++
	}
	for _, name := range bench.CaseNames() {
		require.Positive(t, seen[name], "case %s reported", name)
	}
	require.Equal(t, 4, seen["append-1"], "one line per concurrency, without and with the state cache")
	require.Equal(t, 3, seen["e2e-latency"], "p50, p95, p99")

	// Without -json: the versions and a table with the targets.
	code, text, errText := eskit(t, "bench", "-cases", "append-100", "-append100-n", "4", "-rounds", "2",
		"-postgres-url", testsvc.PostgresURL(), "-redis-url", testsvc.RedisURL(), "-nats-url", natsURL)
	require.Equal(t, 0, code, errText)
	require.Contains(t, text, "PostgreSQL ")
	require.Contains(t, text, "CASE")
	require.Contains(t, text, "append-100")
	require.Contains(t, text, "ratio ≥ 0.9")

	// Bad flags are usage errors.
	code, _, errText = eskit(t, "bench", "-cases", "nope")
	require.Equal(t, 2, code)
	require.Contains(t, errText, `unknown case "nope"`)
	code, _, errText = eskit(t, "bench", "-append-concurrency", "0")
	require.Equal(t, 2, code)
	require.Contains(t, errText, "append-concurrency")
}
