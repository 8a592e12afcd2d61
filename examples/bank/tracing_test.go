package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/eskit/eskit/commandbus"
)

// TestTraceFlag: -trace is off unless asked for, and otlp when the
// standard OTLP endpoint variables are set.
func TestTraceFlag(t *testing.T) {
	for _, tc := range []struct {
		name, endpoint, tracesEndpoint string
		args                           []string
		want                           string
	}{
		{name: "default", want: traceNone},
		{name: "endpoint", endpoint: "http://collector:4318", want: traceOTLP},
		{name: "traces endpoint", tracesEndpoint: "http://collector:4318/v1/traces", want: traceOTLP},
		{name: "endpoint but none", endpoint: "http://collector:4318", args: []string{"-trace", "none"}, want: traceNone},
		{name: "stdout", args: []string{"-trace", "stdout"}, want: traceStdout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(envOTLPEndpoint, tc.endpoint)
			t.Setenv(envOTLPTracesEndpoint, tc.tracesEndpoint)
			cfg, err := parse(tc.args, io.Discard)
			require.NoError(t, err)
			assert.Equal(t, tc.want, cfg.trace)
		})
	}
	t.Run("unknown", func(t *testing.T) {
		err := run(t.Context(), []string{"-trace", "jaeger", "-postgres=", "-nats=", "-redis="}, io.Discard, io.Discard)
		require.ErrorContains(t, err, `-trace "jaeger": want otlp, stdout or none`)
	})
}

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// span is the part of a span that stdouttrace prints which the tests read.
type span struct {
	Name        string
	SpanContext struct{ TraceID, SpanID string }
	Parent      struct{ TraceID, SpanID string }
}

// printedSpans decodes the spans that stdouttrace printed among the other
// lines of out: each is a JSON object starting on a line of its own.
func printedSpans(t *testing.T, out string) []span {
	t.Helper()
	var spans []span
	for i := 0; i < len(out); {
		j := strings.Index(out[i:], "{\n\t\"Name\": ")
		if j < 0 {
			break
		}
		dec := json.NewDecoder(strings.NewReader(out[i+j:]))
		var s span
		require.NoError(t, dec.Decode(&s))
		spans = append(spans, s)
		i += j + int(dec.InputOffset())
	}
	return spans
}

// TestTraceDemoToStdout runs the demo with -trace stdout: every command's
// trace continues through the relay and the projections.
func TestTraceDemoToStdout(t *testing.T) {
	// The spans are printed as they end, while the demo prints: stdout
	// must be safe for concurrent use, as os.Stdout is.
	var out syncBuffer
	var logs bytes.Buffer
	err := run(t.Context(), []string{"demo", "-trace", "stdout", "-postgres=", "-nats=", "-redis="}, &out, &logs)
	require.NoError(t, err, "logs:\n%s", logs.String())
	assert.Contains(t, logs.String(), "exporting traces")

	spans := printedSpans(t, out.String())
	byName := map[string][]span{}
	commands := map[string]string{} // trace ID -> command span name
	for _, s := range spans {
		name := s.Name
		if cmd, ok := strings.CutPrefix(name, "command "); ok {
			commands[s.SpanContext.TraceID] = cmd
			name = "command"
		} else if _, ok := strings.CutPrefix(name, "query "); ok {
			name = "query"
		}
		byName[name] = append(byName[name], s)
	}
	for _, name := range []string{"command", "query", "outbox.publish", "projection.apply"} {
		assert.NotEmpty(t, byName[name], "no %s span among %d", name, len(spans))
	}
	// The relay's and the projections' spans belong to the traces of the
	// commands that caused the events.
	for _, name := range []string{"outbox.publish", "projection.apply"} {
		for _, s := range byName[name] {
			assert.Contains(t, commands, s.SpanContext.TraceID, "%s span %s is in no command's trace", name, s.SpanContext.SpanID)
			assert.NotEmpty(t, s.Parent.SpanID, "%s span %s has no parent", name, s.SpanContext.SpanID)
		}
	}
}

// TestTraceOTLP exports to an OTLP/HTTP collector named by the standard
// variable, and flushes what is buffered when it stops.
func TestTraceOTLP(t *testing.T) {
	var (
		mu       sync.Mutex
		requests []*coltracepb.ExportTraceServiceRequest
	)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" || err != nil {
			t.Errorf("collector: %s %s %s: %v", r.Method, r.URL.Path, r.Header.Get("Content-Type"), err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			t.Errorf("collector: %v", err)
		}
		mu.Lock()
		requests = append(requests, &req)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer collector.Close()
	t.Setenv(envOTLPEndpoint, collector.URL)
	t.Setenv("OTEL_SERVICE_NAME", "")
	cfg, err := parse(nil, io.Discard)
	require.NoError(t, err)

	stop, err := startTracing(t.Context(), cfg.trace, io.Discard, testLogger(t))
	require.NoError(t, err)
	// A command dispatched through the instrumented bus, as the bank's
	// API dispatches them; the tracer provider is the global one.
	type openAccount struct{ Owner string }
	bus := commandbus.New(commandbus.WithMiddleware(commandbus.Telemetry()))
	require.NoError(t, commandbus.Register(bus, func(context.Context, openAccount) (commandbus.Result, error) {
		return commandbus.Result{StreamID: "account-1", Version: 1}, nil
	}))
	_, err = commandbus.Send(t.Context(), bus, openAccount{Owner: "ann"})
	require.NoError(t, err)
	stop()
	_, span := otel.Tracer("test").Start(t.Context(), "after stop")
	assert.False(t, span.IsRecording(), "the provider is uninstalled")
	span.End()

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, requests, 1)
	var names []string
	for _, rs := range requests[0].ResourceSpans {
		var service string
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.Key == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		assert.Equal(t, serviceName, service)
		for _, ss := range rs.ScopeSpans {
			assert.Equal(t, "github.com/eskit/eskit/commandbus", ss.GetScope().GetName())
			for _, s := range ss.Spans {
				names = append(names, s.Name)
			}
		}
	}
	assert.Equal(t, []string{"command main.openAccount"}, names)
}
