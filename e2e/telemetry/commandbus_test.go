package telemetry_test

import (
	"context"
	"errors"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/eskit/eskit/internal/require"

	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/telemetry"
)

type telCmd struct{ N int }

func (c telCmd) Validate() error {
	if c.N < 0 {
		return errors.New("negative")
	}
	return nil
}

func TestTelemetryMiddleware(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	bus := commandbus.New(commandbus.WithMiddleware(
		commandbus.Telemetry(telemetry.WithTracerProvider(tp), telemetry.WithMeterProvider(mp)),
		commandbus.Validation(),
	))
	require.NoError(t, commandbus.Register(bus, func(_ context.Context, c telCmd) (commandbus.Result, error) {
		switch c.N {
		case 1:
			return commandbus.Result{}, &eventstore.ConcurrencyError{Stream: "s", Expected: eventstore.Exact(1), Actual: 2}
		case 2:
			return commandbus.Result{}, errors.New("boom")
		}
		return commandbus.Result{StreamID: "s", Version: 1}, nil
	}))
	ctx := context.Background()
	for _, n := range []int{0, 0, 1, 2, -1} {
		_, _ = bus.Dispatch(ctx, telCmd{N: n})
	}

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(ctx, &rm))
	counts := map[string]int64{}
	durations := map[string]uint64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch m.Name {
			case telemetry.MetricCommands:
				for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
					cmd, _ := dp.Attributes.Value(attribute.Key(telemetry.LabelCommand))
					require.Equal(t, "telemetry_test.telCmd", cmd.AsString())
					outcome, _ := dp.Attributes.Value(attribute.Key(telemetry.LabelOutcome))
					counts[outcome.AsString()] = dp.Value
				}
			case telemetry.MetricCommandDuration:
				for _, dp := range m.Data.(metricdata.Histogram[float64]).DataPoints {
					outcome, _ := dp.Attributes.Value(attribute.Key(telemetry.LabelOutcome))
					durations[outcome.AsString()] = dp.Count
				}
			}
		}
	}
	want := map[string]int64{telemetry.OutcomeOK: 2, telemetry.OutcomeConflict: 1, telemetry.OutcomeError: 1, telemetry.OutcomeRejected: 1}
	require.Equal(t, want, counts)
	require.Equal(t, map[string]uint64{telemetry.OutcomeOK: 2, telemetry.OutcomeConflict: 1, telemetry.OutcomeError: 1, telemetry.OutcomeRejected: 1}, durations)

	got := spans.GetSpans()
	require.Len(t, got, 5)
	for _, s := range got {
		require.Equal(t, "command telemetry_test.telCmd", s.Name)
	}
	require.Equal(t, "Error", got[3].Status.Code.String())
	require.Equal(t, "Unset", got[0].Status.Code.String())
}
