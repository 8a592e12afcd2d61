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
	// MetricInstances is the number of instances by saga, partition and
	// status, as last counted (every 10 s) by the runner that leads the
	// partition; a runner stops reporting a partition when it loses it:
	// eskit_saga_instances.
	MetricInstances = "eskit.saga.instances"
	// MetricDeadlineOverdue is, by saga and partition, how long the
	// oldest due deadline (of an instance neither parked nor holding
	// records) has been due without firing, 0 when none is: a value that
	// keeps growing is a partition that does not fire its deadlines. The
	// runner leading the partition reports it:
	// eskit_saga_deadline_overdue_seconds.
	MetricDeadlineOverdue = "eskit.saga.deadline.overdue"
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

	// LabelSaga names the saga; LabelPartition, LabelStatus, LabelKind
	// and LabelReason are the other attributes.
	LabelSaga      = "saga"
	LabelPartition = telemetry.LabelPartition
	LabelStatus    = "status"
	LabelKind      = "kind"
	LabelReason    = "reason"
)

// countEvery is how often the runner leading a partition counts its
// instances and looks for its oldest due deadline.
const countEvery = 10 * time.Second

type metrics struct {
	saga       string
	now        func() time.Time
	meter      metric.Meter
	steps      metric.Int64Counter
	dispatches metric.Int64Counter
	skips      metric.Int64Counter
	lag        metric.Float64Histogram
	instances  metric.Int64ObservableGauge
	overdue    metric.Float64ObservableGauge

	mu    sync.Mutex
	parts map[int]*partitionStats // the partitions this runner reports
}

// partitionStats is what was last counted of one partition.
type partitionStats struct {
	counts map[Status]int
	// oldestDue is the due time of the oldest due deadline (zero: none).
	oldestDue time.Time
}

func newMetrics(cfg telemetry.Config, saga string, now func() time.Time) *metrics {
	m := &metrics{saga: saga, now: now, meter: cfg.Meter("saga"), parts: map[int]*partitionStats{}}
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
	m.instances, err = m.meter.Int64ObservableGauge(MetricInstances, metric.WithUnit("{instance}"), metric.WithDescription("Saga instances by partition and status, as last counted by the partition's runner."))
	telemetry.Handle(err)
	m.overdue, err = m.meter.Float64ObservableGauge(MetricDeadlineOverdue, metric.WithUnit("s"), metric.WithDescription("How long the oldest due saga deadline of the partition has waited to fire (0: none)."))
	telemetry.Handle(err)
	return m
}

// observe registers the gauges' callback until the returned function is
// called.
func (m *metrics) observe() func() {
	if m.instances == nil || m.overdue == nil {
		return func() {}
	}
	reg, err := m.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		m.mu.Lock()
		defer m.mu.Unlock()
		now := m.now()
		for p, ps := range m.parts {
			part := attribute.Int(LabelPartition, p)
			if ps.counts != nil {
				for _, s := range Statuses {
					o.ObserveInt64(m.instances, int64(ps.counts[s]), metric.WithAttributes(attribute.String(LabelSaga, m.saga), part, attribute.String(LabelStatus, string(s))))
				}
			}
			overdue := 0.0
			if !ps.oldestDue.IsZero() {
				overdue = max(now.Sub(ps.oldestDue), 0).Seconds()
			}
			o.ObserveFloat64(m.overdue, overdue, metric.WithAttributes(attribute.String(LabelSaga, m.saga), part))
		}
		return nil
	}, m.instances, m.overdue)
	if err != nil {
		telemetry.Handle(err)
		return func() {}
	}
	return func() { telemetry.Handle(reg.Unregister()) }
}

// refresh counts the instances of f's partition by status and finds its
// oldest due deadline.
func (m *metrics) refresh(ctx context.Context, store Store, f Fence) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := store.CountPartition(ctx, m.saga, f.Partition)
	if err != nil {
		return err
	}
	due, err := store.DueDeadlines(ctx, f, m.now(), 1)
	if err != nil {
		return err
	}
	ps := &partitionStats{counts: c}
	if len(due) > 0 {
		ps.oldestDue = due[0].Deadline.Due
	}
	m.mu.Lock()
	m.parts[f.Partition] = ps
	m.mu.Unlock()
	return nil
}

// firedUpTo notes that partition p has fired every due deadline up to
// horizon.
func (m *metrics) firedUpTo(p int, horizon time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ps := m.parts[p]; ps != nil && !ps.oldestDue.IsZero() && !ps.oldestDue.After(horizon) {
		ps.oldestDue = time.Time{}
	}
}

// drop stops reporting partition p (another runner leads it now).
func (m *metrics) drop(p int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.parts, p)
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
