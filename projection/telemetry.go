package projection

import (
	"context"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/telemetry"
)

// headTimeout bounds the feed head read of one metrics collection.
const headTimeout = 2 * time.Second

// WithTelemetry sets the tracer and meter providers of the runner's
// instrumentation (the OpenTelemetry global providers otherwise).
//
// The runner records a consumer span (telemetry.SpanApply) for every record
// that carries trace context, as a child of that context: live, the
// context of the relay's publish span from the message headers; during a
// catch-up or rebuild, the context stored in the event's metadata. The
// projection's apply function gets the span in its context. Records
// without trace context are applied without a span.
//
// Metrics, by projection: the counters telemetry.MetricProjectionApplied
// and MetricProjectionParkedTotal, and, for the partitions this runner
// holds while Run runs, the observable gauges MetricProjectionLagEvents,
// MetricProjectionLag and MetricProjectionParked (labelled with the
// projection and the partition). The gauges come from what
// the runner keeps in memory, plus one read of the feed's head per
// collection.
func WithTelemetry(opts ...telemetry.Option) Option {
	return func(c *config) { c.telemetry = append(c.telemetry, opts...) }
}

type runnerTelemetry struct {
	tracer      trace.Tracer
	meter       metric.Meter
	applied     metric.Int64Counter
	parkedTotal metric.Int64Counter
	lagEvents   metric.Int64ObservableGauge
	lag         metric.Float64ObservableGauge
	parked      metric.Int64ObservableGauge
	sets        map[string]attribute.Set // by projection
	partSets    sync.Map                 // "<projection>/<partition>" -> attribute.Set
}

// set returns the attributes of one partition of a projection.
func (t *runnerTelemetry) set(name string, p int) attribute.Set {
	key := name + "/" + strconv.Itoa(p)
	if s, ok := t.partSets.Load(key); ok {
		return s.(attribute.Set)
	}
	s := attribute.NewSet(attribute.String(telemetry.LabelProjection, name), attribute.Int(telemetry.LabelPartition, p))
	t.partSets.Store(key, s)
	return s
}

func newRunnerTelemetry(cfg telemetry.Config, names []string) *runnerTelemetry {
	t := &runnerTelemetry{
		tracer: cfg.Tracer("projection"),
		meter:  cfg.Meter("projection"),
		sets:   make(map[string]attribute.Set, len(names)),
	}
	for _, n := range names {
		t.sets[n] = attribute.NewSet(attribute.String(telemetry.LabelProjection, n))
	}
	var err error
	t.applied, err = t.meter.Int64Counter(telemetry.MetricProjectionApplied, metric.WithUnit("{event}"),
		metric.WithDescription("Records applied and committed by a projection."))
	telemetry.Handle(err)
	t.parkedTotal, err = t.meter.Int64Counter(telemetry.MetricProjectionParkedTotal, metric.WithUnit("{event}"),
		metric.WithDescription("Records parked by a projection (failed, or waiting behind a parked record of their stream)."))
	telemetry.Handle(err)
	t.lagEvents, err = t.meter.Int64ObservableGauge(telemetry.MetricProjectionLagEvents, metric.WithUnit("{event}"),
		metric.WithDescription("Records the projection's checkpoint trails the feed's head by (approximate)."))
	telemetry.Handle(err)
	t.lag, err = t.meter.Float64ObservableGauge(telemetry.MetricProjectionLag, metric.WithUnit("s"),
		metric.WithDescription("How long ago the projection's last applied record was written, while it is behind the head."))
	telemetry.Handle(err)
	t.parked, err = t.meter.Int64ObservableGauge(telemetry.MetricProjectionParked, metric.WithUnit("{event}"),
		metric.WithDescription("Records currently parked in the projection's active namespace."))
	telemetry.Handle(err)
	return t
}

// committed counts a committed batch's applied and parked records.
func (t *runnerTelemetry) committed(ctx context.Context, name string, applied, parked int) {
	set := metric.WithAttributeSet(t.sets[name])
	if applied > 0 {
		t.applied.Add(ctx, int64(applied), set)
	}
	if parked > 0 {
		t.parkedTotal.Add(ctx, int64(parked), set)
	}
}

// observe registers the runner's gauges; the returned function unregisters
// them.
func (r *Runner) observe() func() {
	t := r.tel
	reg, err := t.meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		var (
			head    eventstore.Position
			headErr error
			read    bool
		)
		now := time.Now()
		for _, pr := range r.order {
			for _, pt := range pr.parts {
				pt.vmu.Lock()
				active, ckpt, lastAt, parked := pt.active, pt.ckpt, pt.lastAt, pt.parked
				pt.vmu.Unlock()
				if !active {
					continue
				}
				set := metric.WithAttributeSet(t.set(pr.name, pt.idx))
				o.ObserveInt64(t.parked, int64(parked), set)
				if !read {
					hctx, cancel := context.WithTimeout(ctx, headTimeout)
					head, headErr = r.src.Head(hctx)
					cancel()
					read = true
				}
				if headErr != nil {
					continue
				}
				st := Status{Head: head, Checkpoint: ckpt, LastRecordedAt: lastAt}
				fillLag(&st, now)
				o.ObserveInt64(t.lagEvents, st.LagEvents, set)
				o.ObserveFloat64(t.lag, st.Lag.Seconds(), set)
			}
		}
		return headErr
	}, t.lagEvents, t.lag, t.parked)
	if err != nil {
		telemetry.Handle(err)
		return func() {}
	}
	return func() { telemetry.Handle(reg.Unregister()) }
}

// applyTraced is applyOne inside an apply span when rec carries trace
// context.
func (r *Runner) applyTraced(ctx context.Context, pr *proj, tx txn, i int, b *Batch, rec eventstore.Record) (int, int, error) {
	if !telemetry.HasTraceContext(rec.Metadata) {
		return r.applyOne(ctx, pr, tx, i, b, rec)
	}
	ctx = telemetry.ContextFromMetadata(ctx, rec.Metadata)
	ctx, span := r.tel.tracer.Start(ctx, telemetry.SpanApply, trace.WithSpanKind(trace.SpanKindConsumer))
	slot, attempts, err := r.applyOne(ctx, pr, tx, i, b, rec)
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String(telemetry.AttrProjection, pr.name),
			attribute.String(telemetry.AttrStreamID, rec.StreamID),
			attribute.String(telemetry.AttrEventType, rec.Type),
			attribute.String(telemetry.AttrEventID, rec.ID.String()),
			attribute.Int64(telemetry.AttrVersion, rec.Version),
			attribute.String(telemetry.AttrPosition, rec.Position.String()),
			attribute.Int(telemetry.AttrAttempts, attempts),
			attribute.Bool(telemetry.AttrReplay, b.replay),
		)
		if err != nil {
			span.SetAttributes(attribute.Bool(telemetry.AttrParked, ctx.Err() == nil))
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
	}
	span.End()
	return slot, attempts, err
}
