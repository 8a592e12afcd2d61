package telemetry_test

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/trace"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/telemetry"
)

// A span context as a tracer provider's span would carry it (the caller's
// request span, say).
func requestSpan() context.Context {
	return trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
	}))
}

// The trace context travels with the events: written into their metadata
// when they are appended (the aggregate repository does it), read back by
// whoever handles them later, in another process or a day later.
func ExampleInjectMetadata() {
	md := telemetry.InjectMetadata(requestSpan(), eventstore.Metadata{eventstore.MetaCorrelationID: "req-7"})
	fmt.Println(md[telemetry.MetaTraceParent])
	fmt.Println(telemetry.HasTraceContext(md), telemetry.HasTraceContext(eventstore.Metadata{}))

	// A consumer continues the trace: spans it starts from ctx are
	// children of the request's span.
	ctx := telemetry.ContextFromMetadata(context.Background(), md)
	sc := trace.SpanContextFromContext(ctx)
	fmt.Println(sc.TraceID(), sc.IsRemote())
	// Output:
	// 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
	// true false
	// 4bf92f3577b34da6a3ce929d0e0e4736 true
}

// Message headers carry the same context: the relay writes it into each
// NATS message, a projection reads it back (natsevent and projection do
// this; a consumer of your own does the same).
func ExampleHeaderCarrier() {
	h := telemetry.HeaderCarrier{} // a nats.Header, for example
	telemetry.Propagator().Inject(requestSpan(), h)
	fmt.Println(h.Keys(), h.Get("traceparent"))

	ctx := telemetry.Propagator().Extract(context.Background(), h)
	fmt.Println(trace.SpanContextFromContext(ctx).SpanID())
	// Output:
	// [traceparent] 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
	// 00f067aa0ba902b7
}
