package pgstore

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/telemetry"
)

// WithTelemetry sets the tracer and meter providers of the store's
// instrumentation (the OpenTelemetry global providers otherwise). Every
// append records a span (telemetry.SpanAppend) and the append metrics
// (telemetry.MetricAppendEvents, MetricAppendDuration,
// MetricAppendConflicts).
func WithTelemetry(opts ...telemetry.Option) Option {
	return func(s *Store) { s.telOpts = append(s.telOpts, opts...) }
}

// appendTelemetry instruments appends. Its span and measurement options
// are built once, so that recording allocates as little as possible.
type appendTelemetry struct {
	tracer    trace.Tracer
	events    metric.Int64Counter
	conflicts metric.Int64Counter
	duration  metric.Float64Histogram
	startOpts []trace.SpanStartOption
	outcome   map[string][]metric.RecordOption
}

func newAppendTelemetry(cfg telemetry.Config) *appendTelemetry {
	m := cfg.Meter("eventstore/pgstore")
	t := &appendTelemetry{
		tracer:    cfg.Tracer("eventstore/pgstore"),
		startOpts: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)},
		outcome:   make(map[string][]metric.RecordOption),
	}
	var err error
	t.events, err = m.Int64Counter(telemetry.MetricAppendEvents, metric.WithUnit("{event}"),
		metric.WithDescription("Events appended to the event store (repeats of stored events excluded)."))
	telemetry.Handle(err)
	t.conflicts, err = m.Int64Counter(telemetry.MetricAppendConflicts, metric.WithUnit("{append}"),
		metric.WithDescription("Appends refused because of a concurrency conflict."))
	telemetry.Handle(err)
	t.duration, err = m.Float64Histogram(telemetry.MetricAppendDuration, metric.WithUnit("s"),
		metric.WithDescription("Latency of appends to the event store, by outcome."),
		metric.WithExplicitBucketBoundaries(telemetry.DurationBuckets()...))
	telemetry.Handle(err)
	for _, o := range []string{telemetry.OutcomeOK, telemetry.OutcomeDuplicate, telemetry.OutcomeConflict, telemetry.OutcomeError} {
		t.outcome[o] = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attribute.String(telemetry.LabelOutcome, o)))}
	}
	return t
}

// start opens the append's span.
func (t *appendTelemetry) start(ctx context.Context, appends []eventstore.StreamAppend) (context.Context, trace.Span, time.Time) {
	ctx, span := t.tracer.Start(ctx, telemetry.SpanAppend, t.startOpts...)
	if span.IsRecording() {
		n := 0
		for _, a := range appends {
			n += len(a.Events)
		}
		span.SetAttributes(
			attribute.String(telemetry.AttrDBSystem, "postgresql"),
			attribute.Int(telemetry.AttrStreams, len(appends)),
			attribute.Int(telemetry.AttrEvents, n),
		)
		if len(appends) == 1 {
			span.SetAttributes(attribute.String(telemetry.AttrStreamID, appends[0].StreamID))
		}
	}
	return ctx, span, time.Now()
}

// end records the append's outcome and closes its span.
func (t *appendTelemetry) end(ctx context.Context, span trace.Span, start time.Time, appends []eventstore.StreamAppend, res eventstore.AppendResult, err error) {
	elapsed := time.Since(start).Seconds()
	outcome := telemetry.OutcomeOK
	switch {
	case err == nil && res.Duplicate:
		outcome = telemetry.OutcomeDuplicate
	case err == nil:
		n := 0
		for _, a := range appends {
			n += len(a.Events)
		}
		t.events.Add(ctx, int64(n))
	case errors.Is(err, eventstore.ErrConcurrency):
		outcome = telemetry.OutcomeConflict
		t.conflicts.Add(ctx, 1)
	default:
		outcome = telemetry.OutcomeError
	}
	t.duration.Record(ctx, elapsed, t.outcome[outcome]...)
	if span.IsRecording() {
		span.SetAttributes(attribute.String(telemetry.AttrOutcome, outcome))
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		} else if !res.Position.IsZero() {
			span.SetAttributes(attribute.String(telemetry.AttrPosition, res.Position.String()))
		}
	}
	span.End()
}
