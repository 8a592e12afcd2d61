package aggregate_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/aggregate/internal/account"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/memstore"
	"github.com/eskit/eskit/telemetry"
)

// The events a command causes carry the trace context of the Handle call,
// unless WithTraceContext(false).
func TestHandleWritesTraceContext(t *testing.T) {
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:     trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8},
		TraceFlags: trace.FlagsSampled,
	})
	traced := trace.ContextWithSpanContext(context.Background(), sc)
	const parent = "00-0102030405060708090a0b0c0d0e0f10-0102030405060708-01"

	for _, tc := range []struct {
		name string
		ctx  context.Context
		opts []aggregate.Option
		want string
	}{
		{"traced", traced, nil, parent},
		{"untraced", context.Background(), nil, ""},
		{"disabled", traced, []aggregate.Option{aggregate.WithTraceContext(false)}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := memstore.New()
			r := newRepo(t, store, tc.opts...)
			_, err := r.Handle(tc.ctx, "account-1", account.Open{Owner: "ann"},
				aggregate.WithMetadata(eventstore.Metadata{"tenant": "t1"}))
			if err != nil {
				t.Fatalf("Handle: %v", err)
			}
			recs, err := eventstore.Collect(store.ReadStream(context.Background(), "account-1", 1))
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			md := recs[0].Metadata
			if got := md[telemetry.MetaTraceParent]; got != tc.want {
				t.Fatalf("traceparent = %q, want %q", got, tc.want)
			}
			if md["tenant"] != "t1" {
				t.Fatalf("metadata lost: %v", md)
			}
		})
	}
}
