package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"go.opentelemetry.io/otel/propagation"

	"github.com/eskit/eskit/internal/redact"
	"github.com/eskit/eskit/outbox"
	"github.com/eskit/eskit/telemetry"
)

// checkTimeout bounds each readiness check.
const checkTimeout = 2 * time.Second

// Readiness statuses, of the whole and of each check.
const (
	statusOK          = "ok"
	statusFailed      = "failed"
	statusUnavailable = "unavailable"
)

// routes returns the process's handler: the operational endpoints, which
// every process serves whatever its roles, and the API with the api role.
//
//	GET /livez    200 {"status":"ok"} while the process runs (/healthz is an alias)
//	GET /readyz   200 when every service the roles use answers, 503 otherwise
//	GET /metrics  the Prometheus exposition of the process's metrics
//
// Every request's W3C trace context (traceparent, tracestate) becomes the
// parent of the spans the request causes.
func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	live := func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": statusOK})
	}
	mux.HandleFunc("GET /livez", live)
	mux.HandleFunc("GET /healthz", live)
	mux.HandleFunc("GET /readyz", a.ready)
	if a.svc.metrics != nil {
		mux.Handle("GET /metrics", a.svc.metrics.Handler())
	}
	if a.api != nil {
		mux.Handle("/", a.api)
	}
	return extractTrace(mux)
}

// extractTrace puts the trace context of the request's headers into its
// context, so that the command or query it dispatches continues the
// caller's trace.
func extractTrace(next http.Handler) http.Handler {
	prop := telemetry.Propagator()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// check is one readiness check: a service the process's roles use.
type check struct {
	name string
	run  func(ctx context.Context) error
}

// CheckResult is the outcome of one readiness check.
type CheckResult struct {
	Name   string `json:"name"`
	Status string `json:"status"` // ok or failed
	Error  string `json:"error,omitempty"`
	// detail is the check's error, for the log only.
	detail error
	// LatencyMS is how long the check took, in milliseconds.
	LatencyMS float64 `json:"latency_ms"`
}

// Readiness is the body of GET /readyz.
type Readiness struct {
	Status string        `json:"status"` // ok or unavailable
	Checks []CheckResult `json:"checks"`
}

// checks lists what the process's roles depend on: PostgreSQL for every
// role (the in-memory store needs no check), NATS and JetStream for the
// relay and the projector, Redis for the API and the projector; and the
// workers themselves: the relay, the projection runner and the transfer
// process are ready once they have passed their start-up checks, and until
// they stop, whether they lead (hold their leases) or stand by.
func (a *app) checks() []check {
	svc := a.svc
	var cs []check
	if svc.pool != nil {
		cs = append(cs, check{"postgres", func(ctx context.Context) error {
			if err := svc.pool.Ping(ctx); err != nil {
				return fmt.Errorf("ping: %w", err)
			}
			return nil
		}})
	}
	if svc.js != nil && (a.roles.has(roleRelay) || a.roles.has(roleProjector)) {
		cs = append(cs, check{"nats", func(ctx context.Context) error {
			if nc := svc.js.Conn(); !nc.IsConnected() {
				return fmt.Errorf("connection %s", nc.Status())
			}
			if _, err := svc.js.AccountInfo(ctx); err != nil {
				return fmt.Errorf("JetStream account info: %w", err)
			}
			return nil
		}})
	}
	if svc.rdb != nil && (a.roles.has(roleAPI) || a.roles.has(roleProjector)) {
		cs = append(cs, check{"redis", func(ctx context.Context) error {
			if err := svc.rdb.Ping(ctx).Err(); err != nil {
				return fmt.Errorf("ping: %w", err)
			}
			return nil
		}})
	}
	if a.relay != nil {
		cs = append(cs, check{"relay", func(context.Context) error { return a.relay.Ready() }})
	}
	if a.runner != nil {
		cs = append(cs, check{"projections", func(context.Context) error { return a.runner.Ready() }})
	}
	if a.process != nil {
		cs = append(cs, check{"transfers", func(context.Context) error { return a.process.Ready() }})
	}
	return cs
}

// publicReason is what /readyz tells anyone about a failed check.
func publicReason(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	case errors.Is(err, outbox.ErrNotStarted):
		return "starting"
	case errors.Is(err, outbox.ErrStopped):
		return "stopped"
	}
	return "unreachable or failing (details in the server's log)"
}

// readiness runs the checks concurrently, each under checkTimeout.
func (a *app) readiness(ctx context.Context) Readiness {
	cs := a.checks()
	res := Readiness{Status: statusOK, Checks: make([]CheckResult, len(cs))}
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, checkTimeout)
			defer cancel()
			start := time.Now()
			err := c.run(cctx)
			r := CheckResult{Name: c.name, Status: statusOK, LatencyMS: float64(time.Since(start).Microseconds()) / 1000}
			if err != nil {
				// The public body says what failed, not how: errors of
				// drivers name users, databases and addresses. The details
				// go to the log.
				r.Status, r.Error, r.detail = statusFailed, publicReason(err), err
			}
			res.Checks[i] = r
		})
	}
	wg.Wait()
	for _, r := range res.Checks {
		if r.Status != statusOK {
			res.Status = statusUnavailable
		}
	}
	return res
}

// ready answers GET /readyz: 200 when every check passes, 503 otherwise.
func (a *app) ready(w http.ResponseWriter, r *http.Request) {
	res := a.readiness(r.Context())
	status := http.StatusOK
	if res.Status != statusOK {
		status = http.StatusServiceUnavailable
		for _, c := range res.Checks {
			if c.Status != statusOK {
				a.log.WarnContext(r.Context(), "bank: not ready", "check", c.Name, "err", redact.URLs(fmt.Sprint(c.detail)))
			}
		}
	}
	writeJSON(w, status, res)
}

// writeJSON writes v as the JSON body of the answer.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // fails only when the client went away
}
