package telemetry_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/projection"
	"github.com/eskit/eskit/telemetry"
)

// spans returns the ended spans of trace id, by name prefix.
func spansOf(exp *tracetest.InMemoryExporter, id trace.TraceID) map[string][]tracetest.SpanStub {
	out := make(map[string][]tracetest.SpanStub)
	for _, s := range exp.GetSpans() {
		if s.SpanContext.TraceID() != id {
			continue
		}
		name, _, _ := strings.Cut(s.Name, " ")
		out[name] = append(out[name], s)
	}
	return out
}

func attr(s tracetest.SpanStub, key string) attribute.Value {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// TestTraceFollowsCommandToReadModel checks that one trace covers a
// command's dispatch, its append, the relay's publish, the projection's
// apply (live from JetStream, and from the store's feed in a rebuild) and
// the query that reads the result.
func TestTraceFollowsCommandToReadModel(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	f := newFlow(t, telemetry.WithTracerProvider(tp))
	ctx := context.Background()

	// The first command may reach the projection through its catch-up;
	// once the runner follows JetStream, the next comes live.
	f.deposit(t, ctx, "a", 10)
	eventually(t, 30*time.Second, "the runner to follow JetStream", func() bool { return f.runner.Following(balances) })
	// The runner applies a record live from JetStream, or, when the relay
	// is slower than its idle check of the store, from the store's feed
	// (whose apply continues the command's span, stored with the event).
	// The traced command is repeated until one is applied live.
	var (
		root                        trace.Span
		res                         commandbus.Result
		cmd, app, pub, apply, query tracetest.SpanStub
		balance                     int64 = 10
		id                          trace.TraceID
	)
	for attempt := 1; ; attempt++ {
		rctx, r := tp.Tracer("test").Start(ctx, "request")
		res = f.deposit(t, rctx, "a", 5)
		balance += 5
		require.Equal(t, balance, f.balance(t, rctx, "a", res.Position))
		r.End()
		root = r
		id = root.SpanContext().TraceID()
		var got map[string][]tracetest.SpanStub
		eventually(t, 30*time.Second, "the command's spans", func() bool {
			got = spansOf(exp, id)
			return len(got[telemetry.SpanCommand]) == 1 && len(got[telemetry.SpanAppend]) == 1 &&
				len(got[telemetry.SpanPublish]) == 1 && len(got[telemetry.SpanApply]) == 1 && len(got[telemetry.SpanQuery]) == 1
		})
		cmd, app = got[telemetry.SpanCommand][0], got[telemetry.SpanAppend][0]
		pub, apply = got[telemetry.SpanPublish][0], got[telemetry.SpanApply][0]
		query = got[telemetry.SpanQuery][0]
		if apply.Parent.SpanID() == pub.SpanContext.SpanID() {
			break
		}
		require.Equal(t, cmd.SpanContext.SpanID(), apply.Parent.SpanID(), "an apply from the store's feed continues the command's span")
		require.Less(t, attempt, 20, "no traced command was applied live from JetStream")
	}

	require.Equal(t, "command telemetry_test.deposit", cmd.Name)
	require.Equal(t, root.SpanContext().SpanID(), cmd.Parent.SpanID())
	require.Equal(t, "telemetry_test.deposit", attr(cmd, telemetry.AttrCommand).AsString())
	require.Equal(t, telemetry.OutcomeOK, attr(cmd, telemetry.AttrOutcome).AsString())

	require.Equal(t, cmd.SpanContext.SpanID(), app.Parent.SpanID(), "append is a child of the command")
	require.Equal(t, int64(1), attr(app, telemetry.AttrEvents).AsInt64())
	require.Equal(t, int64(1), attr(app, telemetry.AttrStreams).AsInt64())
	require.Equal(t, res.Position.String(), attr(app, telemetry.AttrPosition).AsString())

	require.Equal(t, cmd.SpanContext.SpanID(), pub.Parent.SpanID(), "publish continues the context stored with the event")
	require.True(t, pub.Parent.IsRemote())
	require.Equal(t, trace.SpanKindProducer, pub.SpanKind)
	require.Equal(t, res.Position.String(), attr(pub, telemetry.AttrPosition).AsString())

	require.Equal(t, pub.SpanContext.SpanID(), apply.Parent.SpanID(), "live apply continues the publish span from the message headers")
	require.Equal(t, trace.SpanKindConsumer, apply.SpanKind)
	require.Equal(t, balances, attr(apply, telemetry.AttrProjection).AsString())
	require.Equal(t, res.Position.String(), attr(apply, telemetry.AttrPosition).AsString())

	require.Equal(t, "query telemetry_test.getBalance", query.Name)
	require.Equal(t, root.SpanContext().SpanID(), query.Parent.SpanID())

	// The event stored the command's trace context, so a rebuild from the
	// store (no broker) continues the same trace.
	var md eventstore.Metadata
	for rec, err := range f.store.ReadStream(ctx, "account-a", res.Version) {
		require.NoError(t, err)
		md = rec.Metadata
		break
	}
	require.Equal(t, cmd.SpanContext.TraceID().String(), md[telemetry.MetaTraceParent][3:35])
	rebuilt, err := projection.NewRunner(f.rdb, f.store, []projection.Projection{projection.New("rebuilt",
		func(context.Context, *projection.Batch, eventstore.Record) error { return nil })},
		projection.WithPrefix(f.prefix+"rebuilt:"), projection.WithTelemetry(telemetry.WithTracerProvider(tp)))
	require.NoError(t, err)
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rebuilt.Run(rctx) }()
	defer func() { cancel(); <-done }()
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	require.NoError(t, rebuilt.WaitFor(wctx, "rebuilt", res.Position))
	var replayed tracetest.SpanStub
	eventually(t, 30*time.Second, "the rebuild's apply span", func() bool {
		for _, s := range spansOf(exp, id)[telemetry.SpanApply] {
			if attr(s, telemetry.AttrProjection).AsString() == "rebuilt" {
				replayed = s
				return true
			}
		}
		return false
	})
	require.Equal(t, cmd.SpanContext.SpanID(), replayed.Parent.SpanID(), "catch-up apply continues the context stored with the event")
	require.True(t, attr(replayed, telemetry.AttrReplay).AsBool())
}
