package telemetry

import (
	"context"
	"reflect"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// DispatchMetrics counts dispatched messages (commands, queries) and records
// their latency, by message type and outcome. The command and query buses'
// Telemetry middleware use it.
type DispatchMetrics struct {
	label    string
	count    metric.Int64Counter
	duration metric.Float64Histogram
	sets     sync.Map // dispatchKey -> metric.MeasurementOption
}

type dispatchKey struct {
	t       reflect.Type
	outcome string
}

// DispatchInstruments names and describes a DispatchMetrics' instruments.
type DispatchInstruments struct {
	// Label is the attribute naming the message type (e.g. LabelCommand).
	Label string
	// Count and Duration are the metric names; Unit the count's unit.
	Count, Duration, Unit string
	// CountHelp and DurationHelp describe them.
	CountHelp, DurationHelp string
}

// NewDispatchMetrics creates the instruments on the meter.
func NewDispatchMetrics(m metric.Meter, in DispatchInstruments) *DispatchMetrics {
	d := &DispatchMetrics{label: in.Label}
	var err error
	d.count, err = m.Int64Counter(in.Count, metric.WithUnit(in.Unit), metric.WithDescription(in.CountHelp))
	Handle(err)
	d.duration, err = m.Float64Histogram(in.Duration, metric.WithUnit("s"), metric.WithDescription(in.DurationHelp),
		metric.WithExplicitBucketBoundaries(DurationBuckets()...))
	Handle(err)
	return d
}

// Record counts one message of type typ (named name) with its outcome and
// latency. Attribute sets are built once per type and outcome.
func (d *DispatchMetrics) Record(ctx context.Context, typ reflect.Type, name, outcome string, elapsed time.Duration) {
	k := dispatchKey{typ, outcome}
	v, ok := d.sets.Load(k)
	if !ok {
		v, _ = d.sets.LoadOrStore(k, metric.WithAttributeSet(attribute.NewSet(
			attribute.String(d.label, name),
			attribute.String(LabelOutcome, outcome),
		)))
	}
	set := v.(metric.MeasurementOption)
	d.count.Add(ctx, 1, set)
	d.duration.Record(ctx, elapsed.Seconds(), set)
}
