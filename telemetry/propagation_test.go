package telemetry_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/eskit/eskit/internal/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/telemetry"
)

func spanContext(t *testing.T, state string) trace.SpanContext {
	t.Helper()
	ts, err := trace.ParseTraceState(state)
	require.NoError(t, err)
	return trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:     trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8},
		TraceFlags: trace.FlagsSampled,
		TraceState: ts,
	})
}

func TestMetadataRoundTrip(t *testing.T) {
	ctx := context.Background()
	require.Nil(t, telemetry.MetadataFromContext(ctx), "no span, no metadata")
	require.Nil(t, telemetry.InjectMetadata(ctx, nil))

	sc := spanContext(t, "vendor=x")
	ctx = trace.ContextWithSpanContext(ctx, sc)
	md := telemetry.MetadataFromContext(ctx)
	require.Equal(t, eventstore.Metadata{
		telemetry.MetaTraceParent: "00-0102030405060708090a0b0c0d0e0f10-0102030405060708-01",
		telemetry.MetaTraceState:  "vendor=x",
	}, md)

	// Injection keeps the other entries and replaces a stale trace state.
	md = telemetry.InjectMetadata(trace.ContextWithSpanContext(context.Background(), spanContext(t, "")),
		eventstore.Metadata{"correlation_id": "c", telemetry.MetaTraceState: "old=1"})
	require.Equal(t, eventstore.Metadata{
		"correlation_id":          "c",
		telemetry.MetaTraceParent: "00-0102030405060708090a0b0c0d0e0f10-0102030405060708-01",
	}, md)

	got := trace.SpanContextFromContext(telemetry.ContextFromMetadata(context.Background(), telemetry.MetadataFromContext(ctx)))
	require.True(t, got.IsRemote())
	require.Equal(t, sc.TraceID(), got.TraceID())
	require.Equal(t, sc.SpanID(), got.SpanID())
	require.Equal(t, "vendor=x", got.TraceState().String())

	plain := context.Background()
	require.Equal(t, plain, telemetry.ContextFromMetadata(plain, eventstore.Metadata{"correlation_id": "c"}))
	require.False(t, trace.SpanContextFromContext(telemetry.ContextFromMetadata(plain,
		eventstore.Metadata{telemetry.MetaTraceParent: "garbage"})).IsValid())
}

func TestHeaderCarrierKeepsKeys(t *testing.T) {
	h := map[string][]string{}
	ctx := trace.ContextWithSpanContext(context.Background(), spanContext(t, ""))
	telemetry.Propagator().Inject(ctx, telemetry.HeaderCarrier(h))
	require.Equal(t, []string{"00-0102030405060708090a0b0c0d0e0f10-0102030405060708-01"}, h["traceparent"])
	require.ElementsMatch(t, []string{"traceparent"}, telemetry.HeaderCarrier(h).Keys())
	got := trace.SpanContextFromContext(telemetry.Propagator().Extract(context.Background(), telemetry.HeaderCarrier(h)))
	require.Equal(t, trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}, got.SpanID())
}
