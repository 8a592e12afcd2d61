// Package promexport serves eskit's metrics (and any other OpenTelemetry
// metrics of the application) to Prometheus: it builds an OpenTelemetry SDK
// meter provider whose reader is the Prometheus exporter, and the
// http.Handler of the /metrics endpoint.
//
//	exp, err := promexport.New(promexport.WithRuntimeMetrics())
//	if err != nil { ... }
//	defer exp.Shutdown(context.Background())
//	otel.SetMeterProvider(exp.MeterProvider()) // or pass it to each component
//	mux.Handle("GET /metrics", exp.Handler())
//
// It lives apart from package telemetry so that the library packages depend
// on the OpenTelemetry API only, never on the SDK or the Prometheus client.
package promexport

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
)

// Option configures New.
type Option func(*config)

type config struct {
	registry   *prometheus.Registry
	runtime    bool
	resource   *resource.Resource
	scopeLabel bool
}

// WithRegistry makes the exporter register with reg (a new registry
// otherwise). The handler serves everything reg gathers.
func WithRegistry(reg *prometheus.Registry) Option {
	return func(c *config) { c.registry = reg }
}

// WithRuntimeMetrics adds the Go runtime and process collectors (go_*,
// process_*) to the registry.
func WithRuntimeMetrics() Option { return func(c *config) { c.runtime = true } }

// WithResource sets the resource describing the process (service name,
// version...), exported as the target_info series.
func WithResource(res *resource.Resource) Option { return func(c *config) { c.resource = res } }

// WithScopeLabels labels every series with the instrumentation scope that
// recorded it (otel_scope_name, otel_scope_version, otel_scope_schema_url:
// for eskit's metrics the component's import path, such as
// github.com/eskit/eskit/outbox). They are left out by default: eskit's
// metric names already say which component records them, and the labels
// repeat on every series. Without them, two scopes must not record
// instruments of the same name and attributes (Prometheus would refuse the
// duplicate series); turn them on when an application's own meters do.
func WithScopeLabels() Option { return func(c *config) { c.scopeLabel = true } }

// Exporter is a meter provider exported to Prometheus.
type Exporter struct {
	provider *sdkmetric.MeterProvider
	registry *prometheus.Registry
	handler  http.Handler
}

// New returns an exporter: instruments created from its MeterProvider are
// served by its Handler under Prometheus names (dots become underscores,
// units become suffixes such as _seconds, counters end in _total), labelled
// with their attributes only (see WithScopeLabels).
func New(opts ...Option) (*Exporter, error) {
	var c config
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if c.registry == nil {
		c.registry = prometheus.NewRegistry()
	}
	if c.runtime {
		for _, col := range []prometheus.Collector{
			collectors.NewGoCollector(),
			collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		} {
			if err := c.registry.Register(col); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
				return nil, fmt.Errorf("promexport: register runtime collector: %w", err)
			}
		}
	}
	eopts := []otelprom.Option{
		otelprom.WithRegisterer(c.registry),
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
	}
	if !c.scopeLabel {
		eopts = append(eopts, otelprom.WithoutScopeInfo())
	}
	reader, err := otelprom.New(eopts...)
	if err != nil {
		return nil, fmt.Errorf("promexport: create the Prometheus exporter: %w", err)
	}
	popts := []sdkmetric.Option{sdkmetric.WithReader(reader)}
	if c.resource != nil {
		popts = append(popts, sdkmetric.WithResource(c.resource))
	}
	return &Exporter{
		provider: sdkmetric.NewMeterProvider(popts...),
		registry: c.registry,
		handler:  promhttp.HandlerFor(c.registry, promhttp.HandlerOpts{}),
	}, nil
}

// MeterProvider returns the meter provider to give eskit's components (or
// to install with otel.SetMeterProvider).
func (e *Exporter) MeterProvider() *sdkmetric.MeterProvider { return e.provider }

// Registry returns the Prometheus registry the metrics are gathered from.
func (e *Exporter) Registry() *prometheus.Registry { return e.registry }

// Handler returns the http.Handler of the /metrics endpoint.
func (e *Exporter) Handler() http.Handler { return e.handler }

// Shutdown stops the meter provider; the handler then serves no OpenTelemetry
// metrics.
func (e *Exporter) Shutdown(ctx context.Context) error {
	if err := e.provider.Shutdown(ctx); err != nil {
		return fmt.Errorf("promexport: shutdown: %w", err)
	}
	return nil
}
