package telemetry_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/telemetry"
	"github.com/eskit/eskit/telemetry/promexport"
)

// scrape fetches the exposition text from h, as Prometheus would.
func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	body, err := io.ReadAll(rec.Body)
	require.NoError(t, err)
	return string(body)
}

// sample returns the value of the series name whose labels include the
// given ones (name="value" pairs), and whether there is one.
func sample(body, name string, labels ...string) (float64, bool) {
	for line := range strings.Lines(body) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		series, value := line[:i], line[i+1:]
		metric, lbls, _ := strings.Cut(series, "{")
		if metric != name {
			continue
		}
		match := true
		for j := 0; j+1 < len(labels); j += 2 {
			if !strings.Contains(lbls, labels[j]+`="`+labels[j+1]+`"`) {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return 0, false
		}
		return v, true
	}
	return 0, false
}

func requireSample(t *testing.T, body string, want float64, name string, labels ...string) {
	t.Helper()
	got, ok := sample(body, name, labels...)
	require.Truef(t, ok, "no series %s%v in:\n%s", name, labels, body)
	require.Equalf(t, want, got, "series %s%v", name, labels)
}

// TestPrometheusMetrics runs commands through the whole pipeline and checks
// the series the /metrics handler serves.
func TestPrometheusMetrics(t *testing.T) {
	exp, err := promexport.New(promexport.WithRuntimeMetrics())
	require.NoError(t, err)
	t.Cleanup(func() { _ = exp.Shutdown(context.Background()) })
	f := newFlow(t, telemetry.WithMeterProvider(exp.MeterProvider()))
	ctx := context.Background()

	const n = 5
	var last commandbus.Result
	for i := range n {
		last = f.deposit(t, ctx, "a", int64(i+1))
	}
	require.Equal(t, int64(15), f.balance(t, ctx, "a", last.Position))
	// A rejected command appends nothing.
	_, err = f.cmds.Dispatch(ctx, deposit{ID: uuid.New(), Account: "a", Amount: -1})
	require.ErrorIs(t, err, errNonPositive)
	// A stale expected version is a conflict.
	ev, err := f.reg.Encode(deposited{Amount: 1}, nil)
	require.NoError(t, err)
	_, err = f.store.Append(ctx, "account-a", eventstore.Exact(1), ev)
	require.ErrorIs(t, err, eventstore.ErrConcurrency)

	body := scrape(t, exp.Handler())
	requireSample(t, body, n, "eskit_append_events_total")
	requireSample(t, body, 1, "eskit_append_conflicts_total")
	requireSample(t, body, n, "eskit_append_duration_seconds_count", "outcome", "ok")
	requireSample(t, body, 1, "eskit_append_duration_seconds_count", "outcome", "conflict")
	sum, ok := sample(body, "eskit_append_duration_seconds_sum", "outcome", "ok")
	require.True(t, ok)
	require.Greater(t, sum, 0.0)
	requireSample(t, body, n, "eskit_append_duration_seconds_bucket", "outcome", "ok", "le", "+Inf")
	requireSample(t, body, n, "eskit_commands_total", "command", "telemetry_test.deposit", "outcome", "ok")
	requireSample(t, body, 1, "eskit_commands_total", "command", "telemetry_test.deposit", "outcome", "rejected")
	requireSample(t, body, n, "eskit_command_duration_seconds_count", "command", "telemetry_test.deposit", "outcome", "ok")
	requireSample(t, body, 1, "eskit_queries_total", "query", "telemetry_test.getBalance", "outcome", "ok")
	requireSample(t, body, n, "eskit_projection_applied_total", "projection", balances)
	requireSample(t, body, 0, "eskit_projection_parked", "projection", balances)
	_, ok = sample(body, "go_goroutines")
	require.True(t, ok, "runtime metrics")
	// Series carry their own labels only, not the instrumentation scope
	// (the metric's name already says which component records it).
	require.NotContains(t, body, "otel_scope_")
	require.Contains(t, body, "\neskit_append_events_total 5\n")
	require.Contains(t, body, `eskit_projection_applied_total{projection="`+balances+`"} 5`)

	// The relay checkpoints after the acknowledgements: its figures settle.
	eventually(t, 30*time.Second, "the relay's figures", func() bool {
		body = scrape(t, exp.Handler())
		published, _ := sample(body, "eskit_relay_published_total")
		lag, _ := sample(body, "eskit_relay_lag_events")
		return published == n && lag == 0
	})
	requireSample(t, body, 1, "eskit_relay_leader", "relay", "outbox")
	requireSample(t, body, 0, "eskit_relay_lag_seconds", "relay", "outbox")
	requireSample(t, body, 0, "eskit_projection_lag_events", "projection", balances)
	requireSample(t, body, 0, "eskit_projection_lag_seconds", "projection", balances)

	// A record the projection refuses is parked and counted.
	res := f.deposit(t, ctx, "b", poison)
	require.False(t, res.Position.IsZero())
	body = scrape(t, exp.Handler())
	requireSample(t, body, 1, "eskit_projection_parked", "projection", balances)
	requireSample(t, body, 1, "eskit_projection_parked_records_total", "projection", balances)
	requireSample(t, body, n, "eskit_projection_applied_total", "projection", balances)
	requireSample(t, body, n+1, "eskit_append_events_total")
}
