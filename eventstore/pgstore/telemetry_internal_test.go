package pgstore

import (
	"context"
	"testing"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/telemetry"
)

// BenchmarkAppendTelemetryNoop measures what the append instrumentation
// costs when the application installs no OpenTelemetry SDK (the global
// no-op providers).
func BenchmarkAppendTelemetryNoop(b *testing.B) {
	tel := newAppendTelemetry(telemetry.NewConfig())
	appends := []eventstore.StreamAppend{{StreamID: "acc-1", Expected: eventstore.Exact(1), Events: make([]eventstore.Event, 1)}}
	res := eventstore.AppendResult{Streams: []eventstore.StreamResult{{StreamID: "acc-1", Version: 2}}, Position: eventstore.Position{Tx: 1, Seq: 2}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		sctx, span, start := tel.start(ctx, appends)
		tel.end(sctx, span, start, appends, res, nil)
	}
}
