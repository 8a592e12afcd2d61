// Package telemetry holds eskit's OpenTelemetry plumbing: the options every
// instrumented component takes, the names of the spans and metrics they
// record, and the propagation of W3C trace context through event metadata
// and message headers.
//
// # Providers
//
// Components take a tracer and a meter provider through their
// WithTelemetry options (pgstore.WithTelemetry, outbox.WithTelemetry,
// projection.WithTelemetry) or middleware (commandbus.Telemetry,
// querybus.Telemetry), each given this package's Options. A provider left
// unset is the OpenTelemetry global one (otel.GetTracerProvider,
// otel.GetMeterProvider), which does nothing until the application installs
// an SDK, so a program that never configures telemetry pays next to
// nothing. This package depends on the OpenTelemetry API only; the
// promexport subpackage builds an SDK meter provider that serves Prometheus.
//
// # One trace from command to read model
//
//   - commandbus.Telemetry starts a span per command;
//   - the aggregate repository writes the context of the span active in its
//     Handle call into every event's metadata (keys MetaTraceParent and
//     MetaTraceState), and pgstore records an "eventstore.append" span;
//   - the outbox relay reads that context back from the record, starts a
//     producer span "outbox.publish" as its child and sends the publish
//     span's context in the message's traceparent and tracestate headers;
//   - the projection runner reads the context from the record (from the
//     message headers when live, from the stored metadata when it catches up
//     from the store) and starts a consumer span "projection.apply" per
//     record; the query side has querybus.Telemetry.
//
// Records without trace context are relayed and applied without spans.
//
// # Metrics
//
// Instrument names follow OpenTelemetry conventions (dots, units apart);
// the Prometheus exporter turns them into the usual names: Metric* constants
// document both.
package telemetry

import (
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// ScopePrefix starts the instrumentation scope name of every eskit
// component: the scope is the component's import path.
const ScopePrefix = "github.com/eskit/eskit/"

// Option configures the telemetry of a component.
type Option func(*Config)

// WithTracerProvider sets the tracer provider (the global one otherwise).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *Config) { c.TracerProvider = tp }
}

// WithMeterProvider sets the meter provider (the global one otherwise).
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *Config) { c.MeterProvider = mp }
}

// Config is the resolved telemetry configuration of a component.
type Config struct {
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
}

// NewConfig applies opts; unset providers are the global ones.
func NewConfig(opts ...Option) Config {
	var c Config
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if c.TracerProvider == nil {
		c.TracerProvider = otel.GetTracerProvider()
	}
	if c.MeterProvider == nil {
		c.MeterProvider = otel.GetMeterProvider()
	}
	return c
}

// Tracer returns the tracer of the component whose import path is
// ScopePrefix + component.
func (c Config) Tracer(component string) trace.Tracer {
	return c.TracerProvider.Tracer(ScopePrefix + component)
}

// Meter returns the meter of the component whose import path is
// ScopePrefix + component.
func (c Config) Meter(component string) metric.Meter {
	return c.MeterProvider.Meter(ScopePrefix + component)
}

// Handle reports an error of the telemetry itself (an instrument that could
// not be created, a callback that failed) to the OpenTelemetry error
// handler; telemetry errors never fail the operation being observed.
func Handle(err error) {
	if err != nil {
		otel.Handle(err)
	}
}
