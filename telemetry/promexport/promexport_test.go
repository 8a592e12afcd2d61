package promexport_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/sdk/resource"

	"github.com/eskit/eskit/telemetry"
	"github.com/eskit/eskit/telemetry/promexport"
)

// scrape returns what the exporter's /metrics handler serves.
func scrape(t *testing.T, exp *promexport.Exporter) string {
	t.Helper()
	rec := httptest.NewRecorder()
	exp.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d", rec.Code)
	}
	body, err := io.ReadAll(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

func newExporter(t *testing.T, opts ...promexport.Option) *promexport.Exporter {
	t.Helper()
	exp, err := promexport.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = exp.Shutdown(context.Background()) })
	return exp
}

// count records one event on an eskit-style counter of the given scope.
func count(t *testing.T, exp *promexport.Exporter, scope, name, label, value string) {
	t.Helper()
	c, err := exp.MeterProvider().Meter(scope).Int64Counter(name)
	if err != nil {
		t.Fatal(err)
	}
	c.Add(context.Background(), 1, metric.WithAttributes(attribute.String(label, value)))
}

// series returns the sample lines of the metric name.
func series(body, name string) []string {
	var lines []string
	for line := range strings.Lines(body) {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
			lines = append(lines, line)
		}
	}
	return lines
}

// TestNoScopeLabelsByDefault: a series carries its own attributes only,
// not the instrumentation scope that recorded it.
func TestNoScopeLabelsByDefault(t *testing.T) {
	exp := newExporter(t)
	count(t, exp, telemetry.ScopePrefix+"outbox", telemetry.MetricRelayPublished, telemetry.LabelRelay, "bank")
	count(t, exp, telemetry.ScopePrefix+"projection", telemetry.MetricProjectionApplied, telemetry.LabelProjection, "balances")
	body := scrape(t, exp)
	if strings.Contains(body, "otel_scope_") {
		t.Errorf("scope labels in the exposition:\n%s", body)
	}
	for name, want := range map[string]string{
		"eskit_relay_published_total":    `eskit_relay_published_total{relay="bank"} 1`,
		"eskit_projection_applied_total": `eskit_projection_applied_total{projection="balances"} 1`,
	} {
		if got := series(body, name); len(got) != 1 || got[0] != want {
			t.Errorf("%s: got %q, want %q", name, got, want)
		}
	}
}

// TestWithScopeLabels brings the scope labels back.
func TestWithScopeLabels(t *testing.T) {
	exp := newExporter(t, promexport.WithScopeLabels())
	count(t, exp, telemetry.ScopePrefix+"outbox", telemetry.MetricRelayPublished, telemetry.LabelRelay, "bank")
	got := series(scrape(t, exp), "eskit_relay_published_total")
	if len(got) != 1 || !strings.Contains(got[0], `otel_scope_name="github.com/eskit/eskit/outbox"`) || !strings.Contains(got[0], `relay="bank"`) {
		t.Errorf("got %q, want the series labelled with its scope", got)
	}
}

// TestRuntimeMetrics adds the Go collectors, also to a registry that has
// them already.
func TestRuntimeMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	exp := newExporter(t, promexport.WithRegistry(reg), promexport.WithRuntimeMetrics())
	if exp.Registry() != reg {
		t.Error("Registry is not the one given")
	}
	if got := series(scrape(t, exp), "go_goroutines"); len(got) != 1 {
		t.Errorf("go_goroutines: %q", got)
	}
	if got := series(scrape(t, newExporter(t)), "go_goroutines"); len(got) != 0 {
		t.Errorf("go_goroutines without WithRuntimeMetrics: %q", got)
	}
}

// TestResource exports the resource as target_info.
func TestResource(t *testing.T) {
	res := resource.NewSchemaless(attribute.String("service.name", "bank"))
	exp := newExporter(t, promexport.WithResource(res))
	count(t, exp, "app", "app.things", "kind", "a")
	body := scrape(t, exp)
	got := series(body, "target_info")
	if len(got) != 1 || !strings.Contains(got[0], `service_name="bank"`) {
		t.Errorf("target_info: %q in\n%s", got, body)
	}
	if got := series(body, "app_things_total"); len(got) != 1 || got[0] != `app_things_total{kind="a"} 1` {
		t.Errorf("app_things_total: %q", got)
	}
}

// TestShutdown: the handler serves no OpenTelemetry metrics afterwards.
func TestShutdown(t *testing.T) {
	exp, err := promexport.New()
	if err != nil {
		t.Fatal(err)
	}
	count(t, exp, "app", "app.things", "kind", "a")
	if err := exp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := series(scrape(t, exp), "app_things_total"); len(got) != 0 {
		t.Errorf("after Shutdown: %q", got)
	}
}
