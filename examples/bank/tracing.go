package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Trace exporters of -trace.
const (
	traceNone   = "none"
	traceOTLP   = "otlp"
	traceStdout = "stdout"
)

// The standard OpenTelemetry variables that point the OTLP exporter at a
// collector (either turns -trace to otlp by default). The exporter also
// reads the other OTEL_EXPORTER_OTLP_* variables (headers, certificates,
// timeout, compression), and the SDK OTEL_TRACES_SAMPLER and
// OTEL_SERVICE_NAME.
const (
	envOTLPEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
	envOTLPTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
)

// localOTLP is where -trace otlp sends spans when no endpoint is
// configured: a collector (or Jaeger) on this machine, without TLS.
const localOTLP = "localhost:4318"

// serviceName names the bank's spans unless OTEL_SERVICE_NAME does.
const serviceName = "eskit-bank"

// traceFlag registers -trace on fs, writing its value to dst.
func traceFlag(fs *flag.FlagSet, dst *string) {
	fs.StringVar(dst, "trace", defaultTraceExporter(),
		"export traces: "+traceOTLP+" (OTLP/HTTP to "+envOTLPEndpoint+", or http://"+localOTLP+"; the default when "+envOTLPEndpoint+" is set), "+
			traceStdout+" (every span as JSON on stdout) or "+traceNone)
}

func defaultTraceExporter() string {
	if os.Getenv(envOTLPEndpoint) != "" || os.Getenv(envOTLPTracesEndpoint) != "" {
		return traceOTLP
	}
	return traceNone
}

// startTracing installs, as the OpenTelemetry global tracer provider that
// every eskit component of the process uses, an SDK provider exporting
// the spans as exporter says (nothing for traceNone). traceStdout prints
// them to stdout as they end, in every goroutine: stdout must be safe for
// concurrent use, as os.Stdout is. The function startTracing returns
// flushes the spans still buffered and uninstalls the provider; call it
// after the components have stopped. Errors of the exporter (a collector
// that does not answer) go to the OpenTelemetry error handler, which logs
// them.
func startTracing(ctx context.Context, exporter string, stdout io.Writer, log *slog.Logger) (stop func(), err error) {
	var opt sdktrace.TracerProviderOption
	switch exporter {
	case "", traceNone:
		return func() {}, nil
	case traceStdout:
		exp, err := stdouttrace.New(stdouttrace.WithWriter(stdout), stdouttrace.WithPrettyPrint())
		if err != nil {
			return nil, fmt.Errorf("-trace %s: %w", exporter, err)
		}
		// Each span is printed when it ends.
		opt = sdktrace.WithSyncer(exp)
	case traceOTLP:
		var opts []otlptracehttp.Option
		if defaultTraceExporter() != traceOTLP {
			opts = append(opts, otlptracehttp.WithEndpoint(localOTLP), otlptracehttp.WithInsecure())
		}
		exp, err := otlptracehttp.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("-trace %s: %w", exporter, err)
		}
		opt = sdktrace.WithBatcher(exp)
	default:
		return nil, fmt.Errorf("-trace %q: want %s, %s or %s", exporter, traceOTLP, traceStdout, traceNone)
	}
	// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override the defaults.
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", serviceName)),
		resource.WithTelemetrySDK(), resource.WithFromEnv())
	if err != nil {
		return nil, fmt.Errorf("-trace %s: describe the process: %w", exporter, err)
	}
	tp := sdktrace.NewTracerProvider(opt, sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	log.Info("bank: exporting traces", "exporter", exporter)
	return func() {
		otel.SetTracerProvider(noop.NewTracerProvider())
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := tp.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
			log.Warn("bank: flush the traces", "err", err)
		}
	}, nil
}
