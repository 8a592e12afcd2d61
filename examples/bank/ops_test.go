package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/examples/bank/domain"
	"github.com/eskit/eskit/internal/infra/natstest"
	"github.com/eskit/eskit/telemetry"
)

// opsTimeout bounds how long a test waits for the workers to report their
// metrics, or for a dependency's failure or recovery to show.
const opsTimeout = 15 * time.Second

// readiness gets /readyz and decodes it.
func (c client) readiness() (int, Readiness) {
	c.t.Helper()
	r := c.get("/readyz")
	require.Equal(c.t, "application/json", r.header.Get("Content-Type"))
	var out Readiness
	r.json(c.t, &out)
	return r.status, out
}

// checkStatuses maps each check's name to its status.
func checkStatuses(r Readiness) map[string]string {
	m := map[string]string{}
	for _, c := range r.Checks {
		m[c.Name] = c.Status
	}
	return m
}

// failedCheck returns the named check, which must have failed with an error.
func failedCheck(t *testing.T, r Readiness, name string) CheckResult {
	t.Helper()
	for _, c := range r.Checks {
		if c.Name == name {
			assert.Equal(t, statusFailed, c.Status)
			assert.NotEmpty(t, c.Error)
			// The public body names the service and its state only.
			for _, secret := range []string{"127.0.0.1", "localhost", "user=", "database=", "dial tcp"} {
				assert.NotContains(t, c.Error, secret)
			}
			return c
		}
	}
	require.Failf(t, "no such check", "%s in %+v", name, r)
	return CheckResult{}
}

// samples are the lines of a Prometheus text exposition: series (name and
// labels, as exposed) to value.
type samples map[string]float64

func (c client) metrics() samples {
	c.t.Helper()
	r := c.get("/metrics")
	require.Equal(c.t, http.StatusOK, r.status, "body: %s", r.body)
	s := samples{}
	for line := range strings.Lines(string(r.body)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		require.Positive(c.t, i, "line %q", line)
		v, err := strconv.ParseFloat(line[i+1:], 64)
		require.NoError(c.t, err, "line %q", line)
		s[line[:i]] = v
	}
	return s
}

// sum adds the values of the series of the metric name whose labels
// include every one of labels (`key="value"`); ok is whether there is one.
func (s samples) sum(name string, labels ...string) (total float64, ok bool) {
	for series, v := range s {
		n, l, _ := strings.Cut(series, "{")
		if n != name || !containsAll(l, labels) {
			continue
		}
		total, ok = total+v, true
	}
	return total, ok
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// TestOperations checks the liveness, readiness and metrics endpoints, and
// trace propagation, against PostgreSQL, JetStream and Redis.
func TestOperations(t *testing.T) {
	ns := natstest.Start(t) // of its own: the test stops it
	svc := realServicesOn(t, ns.URL())
	_, srv := startApp(t, svc, appOptions{})
	c := client{t: t, base: srv.URL, svc: svc}

	t.Run("live", func(t *testing.T) {
		for _, path := range []string{"/livez", "/healthz"} {
			r := c.get(path)
			assert.Equal(t, http.StatusOK, r.status, path)
			assert.JSONEq(t, `{"status":"ok"}`, string(r.body), path)
		}
	})

	t.Run("ready", func(t *testing.T) {
		status, r := c.readiness()
		assert.Equal(t, http.StatusOK, status, "%+v", r)
		assert.Equal(t, statusOK, r.Status)
		assert.Equal(t, map[string]string{"postgres": statusOK, "nats": statusOK, "redis": statusOK,
			"relay": statusOK, "projections": statusOK, "transfers": statusOK}, checkStatuses(r))
		for _, ch := range r.Checks {
			assert.Empty(t, ch.Error, ch.Name)
			assert.GreaterOrEqual(t, ch.LatencyMS, 0.0, ch.Name)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		alice, _ := c.created("/accounts", `{"owner":"Alice","currency":"EUR"}`, http.StatusCreated)
		var pos string
		for range 3 {
			_, pos = c.applied("/accounts/"+alice+"/deposits", `{"amount":100}`)
		}
		assert.Equal(t, int64(300), c.account(alice, pos).Balance)

		m := c.metrics()
		appended, ok := m.sum("eskit_append_events_total")
		require.True(t, ok, "eskit_append_events_total is exported")
		assert.Equal(t, 4.0, appended, "an opening and three deposits")
		deposits, _ := m.sum("eskit_commands_total", `command="api.Deposit"`, `outcome="ok"`)
		assert.Equal(t, 3.0, deposits)
		opened, _ := m.sum("eskit_commands_total", `command="api.OpenAccount"`, `outcome="ok"`)
		assert.Equal(t, 1.0, opened)
		_, ok = m.sum("eskit_command_duration_seconds_count")
		assert.True(t, ok, "eskit_command_duration_seconds is exported")
		_, ok = m.sum("eskit_queries_total", `outcome="ok"`)
		assert.True(t, ok, "eskit_queries_total is exported")
		_, ok = m.sum("eskit_append_duration_seconds_count")
		assert.True(t, ok, "eskit_append_duration_seconds is exported")
		_, ok = m.sum("go_goroutines")
		assert.True(t, ok, "the Go runtime's metrics are exported")

		// The relay and the projection runner report their lag once they
		// lead and hold their leases.
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			m := c.metrics()
			_, ok := m.sum("eskit_relay_lag_events", `relay="`+relayName+`"`)
			assert.True(ct, ok, "eskit_relay_lag_events")
			_, ok = m.sum("eskit_projection_lag_events")
			assert.True(ct, ok, "eskit_projection_lag_events")
			_, ok = m.sum("eskit_projection_parked")
			assert.True(ct, ok, "eskit_projection_parked")
		}, opsTimeout, 50*time.Millisecond)
	})

	t.Run("trace context", func(t *testing.T) {
		// Even without a tracer provider, the caller's trace context reaches
		// the events' metadata, where the relay and the projections pick it
		// up.
		const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
		tp := "00-" + traceID + "-00f067aa0ba902b7-01"
		id, _ := c.created("/accounts", `{"owner":"Trace","currency":"EUR"}`, http.StatusCreated, "traceparent", tp)
		recs, err := eventstore.Collect(svc.store.ReadStream(t.Context(), domain.AccountStream(uuid.MustParse(id)), 1))
		require.NoError(t, err)
		require.Len(t, recs, 1)
		assert.Contains(t, recs[0].Metadata[telemetry.MetaTraceParent], traceID)
	})

	t.Run("not ready without NATS", func(t *testing.T) {
		ns.Stop()
		var r Readiness
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			var status int
			status, r = c.readiness()
			assert.Equal(ct, http.StatusServiceUnavailable, status)
		}, opsTimeout, 50*time.Millisecond)
		assert.Equal(t, statusUnavailable, r.Status)
		assert.Equal(t, map[string]string{"postgres": statusOK, "nats": statusFailed, "redis": statusOK,
			"relay": statusOK, "projections": statusOK, "transfers": statusOK}, checkStatuses(r), "the workers retry: they stay up")
		failedCheck(t, r, "nats")
		assert.Equal(t, http.StatusOK, c.get("/livez").status, "alive all the same")

		require.NoError(t, ns.Restart())
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			status, r := c.readiness()
			assert.Equal(ct, http.StatusOK, status, "%+v", r)
		}, opsTimeout, 50*time.Millisecond, "ready again once NATS is back")
	})

	t.Run("not ready without Redis", func(t *testing.T) {
		// A second API process whose Redis does not answer.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := ln.Addr().String()
		require.NoError(t, ln.Close())
		rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
		t.Cleanup(func() { _ = rdb.Close() })
		apiSvc := &services{store: svc.store, pool: svc.pool, schema: svc.schema, snapshots: svc.snapshots,
			sagas: svc.sagas, leases: svc.leases, rdb: rdb, subjectPrefix: svc.subjectPrefix, redisPrefix: svc.redisPrefix}
		require.NoError(t, apiSvc.initTelemetry())
		t.Cleanup(apiSvc.close)
		rs, err := parseRoles(roleAPI)
		require.NoError(t, err)
		a, err := newApp(context.Background(), apiSvc, rs, testLogger(t), appOptions{tokens: testTokens(t)})
		require.NoError(t, err)
		t.Cleanup(a.close)
		srv := httptest.NewServer(a.handler)
		t.Cleanup(srv.Close)
		c := client{t: t, base: srv.URL, svc: apiSvc}

		status, r := c.readiness()
		assert.Equal(t, http.StatusServiceUnavailable, status)
		assert.Equal(t, statusUnavailable, r.Status)
		assert.Equal(t, map[string]string{"postgres": statusOK, "redis": statusFailed}, checkStatuses(r),
			"the api role uses PostgreSQL and Redis, not NATS")
		failedCheck(t, r, "redis")
		assert.Equal(t, http.StatusOK, c.get("/livez").status)
	})
}
