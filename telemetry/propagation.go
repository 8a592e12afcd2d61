package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/eskit/eskit/eventstore"
)

// Event metadata keys of the W3C trace context. They are also the names of
// the message headers the relay sets (see natsevent.NewMsg).
const (
	MetaTraceParent = "traceparent"
	MetaTraceState  = "tracestate"
)

// Propagator returns the propagator eskit uses for trace context in event
// metadata and message headers: W3C Trace Context. It does not depend on
// the global propagator, so trace context travels even when the
// application configures none.
func Propagator() propagation.TextMapPropagator { return propagation.TraceContext{} }

// HasTraceContext reports whether md carries trace context.
func HasTraceContext(md eventstore.Metadata) bool {
	return md[MetaTraceParent] != ""
}

// MetadataFromContext returns the trace context of the span ctx carries as
// event metadata, or nil when ctx carries no valid span context. It fits
// the aggregate repository's metadata hook
// (aggregate.WithMetadataFrom), although the repository writes trace
// context on its own.
func MetadataFromContext(ctx context.Context) eventstore.Metadata {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	md := make(eventstore.Metadata, 2)
	Propagator().Inject(ctx, propagation.MapCarrier(md))
	return md
}

// InjectMetadata writes the trace context of the span ctx carries into md
// and returns md (allocated when nil). md is returned unchanged when ctx
// carries no valid span context.
func InjectMetadata(ctx context.Context, md eventstore.Metadata) eventstore.Metadata {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return md
	}
	if md == nil {
		md = make(eventstore.Metadata, 2)
	}
	delete(md, MetaTraceState)
	Propagator().Inject(ctx, propagation.MapCarrier(md))
	return md
}

// ContextFromMetadata returns ctx carrying the remote span context stored in
// md, or ctx itself when md carries none (or an invalid one).
func ContextFromMetadata(ctx context.Context, md eventstore.Metadata) context.Context {
	if !HasTraceContext(md) {
		return ctx
	}
	return Propagator().Extract(ctx, propagation.MapCarrier(md))
}

// HeaderCarrier adapts message headers (nats.Header and the like:
// map[string][]string) to a propagation.TextMapCarrier. Unlike
// propagation.HeaderCarrier it keeps keys as given (NATS header names are
// case-sensitive), so the headers are exactly "traceparent" and
// "tracestate".
type HeaderCarrier map[string][]string

// Get returns the first value of key.
func (h HeaderCarrier) Get(key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Set sets key to value, replacing any values.
func (h HeaderCarrier) Set(key, value string) { h[key] = []string{value} }

// Keys lists the keys.
func (h HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

var _ propagation.TextMapCarrier = HeaderCarrier(nil)
