package aggregate

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/eskit/eskit/telemetry"
)

// loadTelemetry records the repository's load metrics. Its measurement
// options are built once, so that recording allocates nothing.
type loadTelemetry struct {
	events           metric.Int64Histogram
	fromSnap, noSnap []metric.RecordOption
}

func newLoadTelemetry(cfg telemetry.Config) *loadTelemetry {
	m := cfg.Meter("aggregate")
	t := &loadTelemetry{
		fromSnap: []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attribute.String(telemetry.LabelSnapshot, "used")))},
		noSnap:   []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attribute.String(telemetry.LabelSnapshot, "none")))},
	}
	var err error
	t.events, err = m.Int64Histogram(telemetry.MetricLoadEvents, metric.WithUnit("{event}"),
		metric.WithDescription("Events replayed per load of a stream by the aggregate repository (after its snapshot, if one was used)."),
		metric.WithExplicitBucketBoundaries(telemetry.LoadEventBuckets()...))
	telemetry.Handle(err)
	return t
}

// loaded records one load that replayed n events.
func (t *loadTelemetry) loaded(ctx context.Context, n int, fromSnapshot bool) {
	opts := t.noSnap
	if fromSnapshot {
		opts = t.fromSnap
	}
	t.events.Record(ctx, int64(n), opts...)
}
