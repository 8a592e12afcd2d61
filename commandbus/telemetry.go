package commandbus

import (
	"context"
	"errors"
	"reflect"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/internal/values"
	"github.com/eskit/eskit/telemetry"
)

// Telemetry records a span per command (named "command <type>", with the
// command's type and ID as attributes) and the command metrics
// telemetry.MetricCommands and telemetry.MetricCommandDuration, by command
// type and outcome: ok, duplicate, rejected (validation or a decider's
// refusal), conflict (a concurrency conflict that outlived the retries) or
// error. Providers left unset in opts are the OpenTelemetry global ones.
//
// Put it first (outermost) to time the whole dispatch, retries included.
// The span is the parent of what the handler does: the aggregate
// repository writes its context into the events' metadata, so the relay
// and the projections continue the same trace.
func Telemetry(opts ...telemetry.Option) Middleware {
	cfg := telemetry.NewConfig(opts...)
	tracer := cfg.Tracer("commandbus")
	metrics := telemetry.NewDispatchMetrics(cfg.Meter("commandbus"), telemetry.DispatchInstruments{
		Label: telemetry.LabelCommand, Count: telemetry.MetricCommands, Duration: telemetry.MetricCommandDuration,
		Unit: "{command}", CountHelp: "Commands dispatched, by command type and outcome.",
		DurationHelp: "Latency of commands, by command type and outcome.",
	})
	return func(next Handler) Handler {
		return func(ctx context.Context, cmd any) (Result, error) {
			name := values.TypeName(cmd)
			ctx, span := tracer.Start(ctx, telemetry.SpanCommand+" "+name, trace.WithSpanKind(trace.SpanKindInternal))
			if span.IsRecording() {
				span.SetAttributes(attribute.String(telemetry.AttrCommand, name))
				if id, ok := CommandIDOf(ctx, cmd); ok {
					span.SetAttributes(attribute.String(telemetry.AttrCommandID, id.String()))
				}
			}
			start := time.Now()
			res, err := next(ctx, cmd)
			outcome := commandOutcome(res, err)
			metrics.Record(ctx, reflect.TypeOf(cmd), name, outcome, time.Since(start))
			if span.IsRecording() {
				span.SetAttributes(attribute.String(telemetry.AttrOutcome, outcome))
				if res.StreamID != "" {
					span.SetAttributes(attribute.String(telemetry.AttrStreamID, res.StreamID), attribute.Int64(telemetry.AttrVersion, res.Version))
				}
				if !res.Position.IsZero() {
					span.SetAttributes(attribute.String(telemetry.AttrPosition, res.Position.String()))
				}
				if err != nil {
					span.RecordError(err)
					if outcome == telemetry.OutcomeError {
						span.SetStatus(codes.Error, err.Error())
					}
				}
			}
			span.End()
			return res, err
		}
	}
}

// commandOutcome classifies a command's result for metrics and spans.
func commandOutcome(res Result, err error) string {
	switch {
	case err == nil && res.Duplicate:
		return telemetry.OutcomeDuplicate
	case err == nil:
		return telemetry.OutcomeOK
	case errors.Is(err, ErrValidation) || errors.Is(err, aggregate.ErrRejected) || errors.Is(err, eventstore.ErrDuplicateEvent):
		return telemetry.OutcomeRejected
	case errors.Is(err, eventstore.ErrConcurrency):
		return telemetry.OutcomeConflict
	case errors.Is(err, eventstore.ErrOutcomeUnknown):
		return telemetry.OutcomeUnknown
	default:
		return telemetry.OutcomeError
	}
}
