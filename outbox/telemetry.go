package outbox

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/natsevent"
	"github.com/eskit/eskit/telemetry"
)

// WithTelemetry sets the tracer and meter providers of the relay's
// instrumentation (the OpenTelemetry global providers otherwise).
//
// The relay records a producer span (telemetry.SpanPublish) for every
// record whose metadata carries trace context, as a child of that context,
// from the publish to its acknowledgement, and sends the span's context in
// the message's traceparent and tracestate headers. Records without trace
// context are published without a span. While Run runs, the relay reports
// telemetry.MetricRelayPublished and the observable gauges
// MetricRelayLagEvents, MetricRelayLag (while it leads),
// MetricRelayLeader and MetricRelayProgressAge (telemetry package; while the leader's
// progress is known: always on the leader, on a standby once it read the
// leader's checkpoint), all with the relay's name as label.
func WithTelemetry(opts ...telemetry.Option) Option {
	return func(c *config) { c.telemetry = append(c.telemetry, opts...) }
}

// errPublishAbandoned ends the spans of records whose acknowledgement the
// relay stopped waiting for.
var errPublishAbandoned = errors.New("outbox: publish abandoned before its acknowledgement")

type relayTelemetry struct {
	tracer    trace.Tracer
	meter     metric.Meter
	published metric.Int64Counter
	lagEvents metric.Int64ObservableGauge
	lag       metric.Float64ObservableGauge
	leader    metric.Int64ObservableGauge
	progress  metric.Float64ObservableGauge
	set       metric.MeasurementOption
	observe   metric.ObserveOption
}

func newRelayTelemetry(cfg telemetry.Config, name string) *relayTelemetry {
	attrs := attribute.NewSet(attribute.String(telemetry.LabelRelay, name))
	t := &relayTelemetry{
		tracer:  cfg.Tracer("outbox"),
		meter:   cfg.Meter("outbox"),
		set:     metric.WithAttributeSet(attrs),
		observe: metric.WithAttributeSet(attrs),
	}
	var err error
	t.published, err = t.meter.Int64Counter(telemetry.MetricRelayPublished, metric.WithUnit("{event}"),
		metric.WithDescription("Records published to JetStream, acknowledged and checkpointed by the relay."))
	telemetry.Handle(err)
	t.lagEvents, err = t.meter.Int64ObservableGauge(telemetry.MetricRelayLagEvents, metric.WithUnit("{event}"),
		metric.WithDescription("Records the leading relay's checkpoint trails the feed's head by (approximate)."))
	telemetry.Handle(err)
	t.lag, err = t.meter.Float64ObservableGauge(telemetry.MetricRelayLag, metric.WithUnit("s"),
		metric.WithDescription("How long the oldest record not yet published by the leading relay has waited."))
	telemetry.Handle(err)
	t.leader, err = t.meter.Int64ObservableGauge(telemetry.MetricRelayLeader,
		metric.WithDescription("1 while the relay holds the leader lease, 0 while it stands by."))
	telemetry.Handle(err)
	t.progress, err = t.meter.Float64ObservableGauge(telemetry.MetricRelayProgressAge, metric.WithUnit("s"),
		metric.WithDescription("How long ago the relay's leader last advanced its checkpoint or found itself caught up."))
	telemetry.Handle(err)
	return t
}

// observe registers the relay's gauges; the returned function unregisters
// them. The callback only reads Stats: it costs no I/O.
func (r *Relay) observe() func() {
	t := r.tel
	reg, err := t.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := r.Stats()
		leader := int64(0)
		if s.Leader {
			leader = 1
			o.ObserveInt64(t.lagEvents, int64(min(s.LagEvents, 1<<62)), t.observe)
			o.ObserveFloat64(t.lag, s.Lag.Seconds(), t.observe)
		}
		o.ObserveInt64(t.leader, leader, t.observe)
		if !s.LeaderProgressAt.IsZero() {
			o.ObserveFloat64(t.progress, max(time.Since(s.LeaderProgressAt), 0).Seconds(), t.observe)
		}
		return nil
	}, t.lagEvents, t.lag, t.leader, t.progress)
	if err != nil {
		telemetry.Handle(err)
		return func() {}
	}
	return func() { telemetry.Handle(reg.Unregister()) }
}

// startPublish starts the publish span of rec when its metadata carries
// trace context, and puts the span's context in msg's headers. It returns
// nil (no span) otherwise.
func (t *relayTelemetry) startPublish(ctx context.Context, rec *eventstore.Record, msg *nats.Msg) trace.Span {
	if !telemetry.HasTraceContext(rec.Metadata) {
		return nil
	}
	ctx = telemetry.ContextFromMetadata(ctx, rec.Metadata)
	ctx, span := t.tracer.Start(ctx, telemetry.SpanPublish, trace.WithSpanKind(trace.SpanKindProducer))
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String(telemetry.AttrMsgSystem, "nats"),
			attribute.String(telemetry.AttrDestination, msg.Subject),
			attribute.String(telemetry.AttrStreamID, rec.StreamID),
			attribute.String(telemetry.AttrEventType, rec.Type),
			attribute.String(telemetry.AttrEventID, rec.ID.String()),
			attribute.Int64(telemetry.AttrVersion, rec.Version),
			attribute.String(telemetry.AttrPosition, rec.Position.String()),
		)
	}
	if span.SpanContext().IsValid() {
		telemetry.Propagator().Inject(ctx, telemetry.HeaderCarrier(msg.Header))
		// Only the traceparent goes as a header: the tracestate is free
		// text (it stays in the encoded metadata), see natsevent.HeaderTraceParent.
		for k := range msg.Header {
			if k != natsevent.HeaderTraceParent && strings.EqualFold(k, "tracestate") {
				delete(msg.Header, k)
			}
		}
		if !natsevent.ValidTraceParent(msg.Header.Get(natsevent.HeaderTraceParent)) {
			delete(msg.Header, natsevent.HeaderTraceParent)
		}
	}
	return span
}

// endPublish ends a publish span (nil is no span), failed when err is set.
func endPublish(span trace.Span, err error) {
	if span == nil {
		return
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
