package promexport_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/telemetry"
	"github.com/eskit/eskit/telemetry/promexport"
)

type OpenAccount struct{ Owner string }

// Serve eskit's metrics on GET /metrics: give every component the
// exporter's meter provider (or install it with otel.SetMeterProvider).
func Example() {
	exp, err := promexport.New(promexport.WithRuntimeMetrics())
	if err != nil {
		panic(err)
	}
	defer exp.Shutdown(context.Background())
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", exp.Handler())

	bus := commandbus.New(commandbus.WithMiddleware(
		commandbus.Telemetry(telemetry.WithMeterProvider(exp.MeterProvider()))))
	_ = commandbus.Register(bus, func(context.Context, OpenAccount) (commandbus.Result, error) {
		return commandbus.Result{StreamID: "account-1", Version: 1}, nil
	})
	_, _ = commandbus.Send(context.Background(), bus, OpenAccount{Owner: "ann"})

	// What Prometheus scrapes: one series per command type and outcome.
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for line := range strings.Lines(rec.Body.String()) {
		if strings.HasPrefix(line, "eskit_commands_total") {
			fmt.Print(line)
		}
	}
	// Output:
	// eskit_commands_total{command="promexport_test.OpenAccount",outcome="ok"} 1
}
