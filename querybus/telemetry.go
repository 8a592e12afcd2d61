package querybus

import (
	"context"
	"maps"
	"reflect"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"

	"github.com/eskit/eskit/internal/values"
	"github.com/eskit/eskit/telemetry"
)

// Telemetry records a span per query (named "query <type>", with the
// positions the query waits for as attributes) and the query metrics
// telemetry.MetricQueries and telemetry.MetricQueryDuration, by query type
// and outcome (as Outcome names it, the same as Logging's); the
// read-your-writes wait is part of the
// duration. Providers left unset in opts are the OpenTelemetry global ones.
func Telemetry(opts ...telemetry.Option) Middleware {
	cfg := telemetry.NewConfig(opts...)
	tracer := cfg.Tracer("querybus")
	metrics := telemetry.NewDispatchMetrics(cfg.Meter("querybus"), telemetry.DispatchInstruments{
		Label: telemetry.LabelQuery, Count: telemetry.MetricQueries, Duration: telemetry.MetricQueryDuration,
		Unit: "{query}", CountHelp: "Queries answered or failed, by query type and outcome.",
		DurationHelp: "Latency of queries (read-your-writes wait included), by query type and outcome.",
	})
	return func(next Handler) Handler {
		return func(ctx context.Context, q any) (any, error) {
			name := values.TypeName(q)
			ctx, span := tracer.Start(ctx, telemetry.SpanQuery+" "+name)
			if span.IsRecording() {
				span.SetAttributes(attribute.String(telemetry.AttrQuery, name))
				req := MinPositions(ctx)
				for _, p := range slices.Sorted(maps.Keys(req)) {
					span.SetAttributes(attribute.String("eskit.min_position"+projectionSuffix(p), req[p].String()))
				}
			}
			start := time.Now()
			res, err := next(ctx, q)
			outcome := Outcome(err)
			metrics.Record(ctx, reflect.TypeOf(q), name, outcome, time.Since(start))
			if span.IsRecording() {
				span.SetAttributes(attribute.String(telemetry.AttrOutcome, outcome))
				if err != nil {
					span.RecordError(err)
					span.SetStatus(codes.Error, err.Error())
				}
			}
			span.End()
			return res, err
		}
	}
}
