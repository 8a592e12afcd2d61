package saga

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/eskit/eskit/telemetry"
)

// Metric instrument names (the Prometheus names the exporter derives in
// the comments) and their attributes.
const (
	// MetricInstances is the number of instances by saga and status, as
	// last counted (every 10 s by the runner of partition 0):
	// eskit_saga_instances.
	MetricInstances = "eskit.saga.instances"
	// MetricSteps counts steps by saga, kind (record, deadline,
	// rejection) and outcome (ok, parked): eskit_saga_steps_total.
	MetricSteps = "eskit.saga.steps"
	// MetricDispatches counts command dispatches by saga and outcome (ok,
	// duplicate, rejected, error, parked): eskit_saga_dispatches_total.
	MetricDispatches = "eskit.saga.dispatches"
	// MetricDeadlineLag is how late deadlines fire, after their due time:
	// eskit_saga_deadline_lag_seconds.
	MetricDeadlineLag = "eskit.saga.deadline.lag"
	// MetricSkipped counts records passed over by reason (duplicate,
	// undecodable, correlate_failed, invalid_instance_id):
	// eskit_saga_skipped_records_total.
	MetricSkipped = "eskit.saga.skipped.records"

	// LabelSaga names the saga; LabelStatus, LabelKind and LabelReason
	// are the other attributes.
	LabelSaga   = "saga"
	LabelStatus = "status"
	LabelKind   = "kind"
	LabelReason = "reason"
)

type metrics struct {
	saga       string
	meter      metric.Meter
	steps      metric.Int64Counter
	dispatches metric.Int64Counter
	skips      metric.Int64Counter
	lag        metric.Float64Histogram
	instances  metric.Int64ObservableGauge

	mu     sync.Mutex
	counts map[Status]int
}

func newMetrics(cfg telemetry.Config, saga string) *metrics {
	m := &metrics{saga: saga, meter: cfg.Meter("saga")}
	var err error
	m.steps, err = m.meter.Int64Counter(MetricSteps, metric.WithUnit("{step}"), metric.WithDescription("Saga steps run, by kind and outcome."))
	telemetry.Handle(err)
	m.dispatches, err = m.meter.Int64Counter(MetricDispatches, metric.WithUnit("{command}"), metric.WithDescription("Commands dispatched by sagas, by outcome."))
	telemetry.Handle(err)
	m.skips, err = m.meter.Int64Counter(MetricSkipped, metric.WithUnit("{record}"), metric.WithDescription("Records a saga passed over, by reason."))
	telemetry.Handle(err)
	m.lag, err = m.meter.Float64Histogram(MetricDeadlineLag, metric.WithUnit("s"), metric.WithDescription("How long after their due time saga deadlines fired."),
		metric.WithExplicitBucketBoundaries(telemetry.DurationBuckets()...))
	telemetry.Handle(err)
	m.instances, err = m.meter.Int64ObservableGauge(MetricInstances, metric.WithUnit("{instance}"), metric.WithDescription("Saga instances by status, as last counted."))
	telemetry.Handle(err)
	return m
}

// observe registers the instance gauge's callback until the returned
// function is called.
func (m *metrics) observe(Store) func() {
	if m.instances == nil {
		return func() {}
	}
	reg, err := m.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, s := range Statuses {
			if m.counts == nil {
				return nil
			}
			o.ObserveInt64(m.instances, int64(m.counts[s]), metric.WithAttributes(attribute.String(LabelSaga, m.saga), attribute.String(LabelStatus, string(s))))
		}
		return nil
	}, m.instances)
	if err != nil {
		telemetry.Handle(err)
		return func() {}
	}
	return func() { telemetry.Handle(reg.Unregister()) }
}

// refresh counts the instances by status.
func (m *metrics) refresh(ctx context.Context, store Store) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := store.Count(ctx, m.saga)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.counts = c
	m.mu.Unlock()
	return nil
}

func (m *metrics) step(ctx context.Context, kind, outcome string) {
	m.steps.Add(ctx, 1, metric.WithAttributes(attribute.String(LabelSaga, m.saga), attribute.String(LabelKind, kind), attribute.String(telemetry.LabelOutcome, outcome)))
}

func (m *metrics) dispatched(ctx context.Context, outcome string) {
	m.dispatches.Add(ctx, 1, metric.WithAttributes(attribute.String(LabelSaga, m.saga), attribute.String(telemetry.LabelOutcome, outcome)))
}

func (m *metrics) skipped(ctx context.Context, reason string) {
	m.skips.Add(ctx, 1, metric.WithAttributes(attribute.String(LabelSaga, m.saga), attribute.String(LabelReason, reason)))
}

func (m *metrics) deadlineLag(ctx context.Context, d time.Duration) {
	m.lag.Record(ctx, max(d, 0).Seconds(), metric.WithAttributes(attribute.String(LabelSaga, m.saga)))
}
