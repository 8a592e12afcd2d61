package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/propagation"

	"github.com/nats-io/nats.go"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/examples/bank/domain"
	"github.com/eskit/eskit/internal/redact"
	"github.com/eskit/eskit/outbox"
	"github.com/eskit/eskit/saga"
	"github.com/eskit/eskit/telemetry"
)

// Readiness bounds. Each check runs under its own checkTimeout, and
// /readyz answers within readyTimeout whatever the checks do: a check
// still running then (a client blocked on its connection's state, a
// server that stopped answering) is reported "timed out", and is not
// started again by later probes while it runs.
const (
	checkTimeout = time.Second
	readyTimeout = 1500 * time.Millisecond
)

// Readiness statuses, of the whole and of each check.
const (
	statusOK          = "ok"
	statusFailed      = "failed"
	statusStalled     = "stalled"
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

// check is one readiness check: a service the process's roles use, or a
// worker, whose run may also say who leads its work and whether it
// advances.
type check struct {
	name string
	run  func(ctx context.Context) (*Work, error)
}

// plain makes a check of a function that reports no work.
func plain(name string, fn func(ctx context.Context) error) check {
	return check{name, func(ctx context.Context) (*Work, error) { return nil, fn(ctx) }}
}

// CheckResult is the outcome of one readiness check.
type CheckResult struct {
	Name   string `json:"name"`
	Status string `json:"status"` // ok, failed or stalled
	Error  string `json:"error,omitempty"`
	// detail is the check's error, for the log only.
	detail error
	// LatencyMS is how long the check took, in milliseconds.
	LatencyMS float64 `json:"latency_ms"`
	// Work says, for the workers, who leads and whether the work advances.
	Work *Work `json:"work,omitempty"`
}

// Work says who leads a piece of work (the relay, the projections, the
// transfer process) and whether it advances, as this process sees it: a
// standby reports the leader it watches.
type Work struct {
	// Leading reports whether this process leads the work (holds its
	// lease; for the projections, at least one partition's).
	Leading bool `json:"leading"`
	// Holder, Token and LeaseExpires are the leader's lease, as last read
	// (empty when none leads, or not known here).
	Holder       string     `json:"holder,omitempty"`
	Token        uint64     `json:"token,omitempty"`
	LeaseExpires *time.Time `json:"lease_expires,omitempty"`
	// Partitions are the partitions this process holds, by projection.
	Partitions map[string][]int `json:"partitions,omitempty"`
	// LagEvents is how many records the work trails the feed's head by
	// (the slowest projection's); -1 when not known.
	LagEvents int64 `json:"lag_events"`
	// ProgressAgeSeconds is how long ago the leader last advanced (absent
	// when not known).
	ProgressAgeSeconds *float64 `json:"progress_age_seconds,omitempty"`
}

// Readiness is the body of GET /readyz.
type Readiness struct {
	Status string        `json:"status"` // ok or unavailable
	Checks []CheckResult `json:"checks"`
}

// opsState is what /readyz keeps between probes.
type opsState struct {
	// stallAfter is how long the leader of a piece of work may go without
	// advancing, while there is lag, before the work is stalled.
	stallAfter time.Duration
	// projections are the projection runner's projections.
	projections []string

	mu      sync.Mutex
	running map[string]bool // checks still running, by name
	// leader is the relay's leader as the last probe saw it, and since
	// when (the first probe after it changed).
	leader leaderSeen
	// progress is, for each projection partition and saga partition, its
	// position and lease as the probes saw them, and since when.
	progress map[string]progressSeen
}

type progressSeen struct {
	marker string
	token  uint64
	since  time.Time
}

// unchangedFor returns how long the work called key has stood still as
// the probes saw it: since the first probe that saw its marker (its
// checkpoint) and its lease token as they are now; 0 when this probe is
// the first to see them.
func (o *opsState) unchangedFor(key, marker string, token uint64, now time.Time) time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.progress == nil {
		o.progress = map[string]progressSeen{}
	}
	seen, ok := o.progress[key]
	if !ok || seen.marker != marker || seen.token != token {
		o.progress[key] = progressSeen{marker: marker, token: token, since: now}
		return 0
	}
	return now.Sub(seen.since)
}

type leaderSeen struct {
	seen  bool
	token uint64
	since time.Time
}

// leaderFor returns since when the leader of token has led, as the probes
// saw it: zero when token is the first one seen (this process does not
// know), the probe that first saw it otherwise.
func (o *opsState) leaderFor(token uint64, now time.Time) time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case !o.leader.seen:
		o.leader = leaderSeen{seen: true, token: token} // the first seen: since unknown
	case o.leader.token != token:
		o.leader = leaderSeen{seen: true, token: token, since: now}
	}
	return o.leader.since
}

// begin marks the check running; false when it still runs from an
// earlier probe.
func (o *opsState) begin(name string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.running[name] {
		return false
	}
	if o.running == nil {
		o.running = map[string]bool{}
	}
	o.running[name] = true
	return true
}

func (o *opsState) end(name string) {
	o.mu.Lock()
	delete(o.running, name)
	o.mu.Unlock()
}

// defaultStallFactor times the lease TTL is the default stall bound. A
// healthy leader advances its checkpoint every few hundred milliseconds
// while there is lag, and a frozen or partitioned one is replaced within
// one TTL (plus a standby's poll): a leader that has not advanced for two
// TTLs is neither working nor being replaced.
const defaultStallFactor = 2

// StalledError is the failure of a check whose leader has not advanced for
// longer than the stall bound while there is lag.
type StalledError struct {
	Work   string
	Holder string // the leader's lease holder, "" when unknown
	Token  uint64
	Age    time.Duration // since the leader last advanced
	Lag    int64
	Bound  time.Duration
}

func (e *StalledError) Error() string {
	who := "the leader"
	if e.Holder != "" {
		who = fmt.Sprintf("the leader %s (token %d)", e.Holder, e.Token)
	}
	return fmt.Sprintf("stalled: %s of the %s has not advanced for %s (bound %s) with %d records to go",
		who, e.Work, e.Age.Round(100*time.Millisecond), e.Bound, e.Lag)
}

// checks lists what the process's roles depend on: PostgreSQL for every
// role (the in-memory store needs no check), NATS and JetStream for the
// relay and the projector, Redis for the API and the projector; and the
// workers themselves: the relay, the projection runner and the transfer
// process are ready once they have passed their start-up checks, and until
// they stop, whether they lead (hold their leases) or stand by. The
// workers' checks also say who leads and whether the work advances: a
// piece of work whose leader stalls (the relay, a projection partition,
// the transfer process: it holds the lease but has not advanced for the
// stall bound while records wait) fails its check on every process with
// that role, standbys included.
func (a *app) checks() []check {
	svc := a.svc
	var cs []check
	if svc.pool != nil {
		cs = append(cs, plain("postgres", func(ctx context.Context) error {
			if err := svc.pool.Ping(ctx); err != nil {
				return fmt.Errorf("ping: %w", err)
			}
			return nil
		}))
	}
	if svc.js != nil && (a.roles.has(roleRelay) || a.roles.has(roleProjector)) {
		cs = append(cs, plain("nats", func(ctx context.Context) error {
			// Status only reads the connection's state; the round trip
			// to JetStream tells a server that stopped answering, under
			// ctx's deadline.
			if st := svc.js.Conn().Status(); st != nats.CONNECTED {
				return fmt.Errorf("connection %s", st)
			}
			if _, err := svc.js.AccountInfo(ctx); err != nil {
				return fmt.Errorf("JetStream account info: %w", err)
			}
			return nil
		}))
	}
	if svc.rdb != nil && svc.readModels != readModelsPostgres && (a.roles.has(roleAPI) || a.roles.has(roleProjector)) {
		cs = append(cs, plain("redis", func(ctx context.Context) error {
			if err := svc.rdb.Ping(ctx).Err(); err != nil {
				return fmt.Errorf("ping: %w", err)
			}
			return nil
		}))
	}
	if a.relay != nil {
		cs = append(cs, check{"relay", a.relayWork})
	}
	if a.runner != nil {
		cs = append(cs, check{"projections", a.projectionWork})
	}
	if a.process != nil {
		cs = append(cs, check{"transfers", a.transferWork})
	}
	return cs
}

// relayWork reports the relay's leader and progress (from Stats: a
// standby reads the leader's lease and checkpoint every check interval),
// and fails with a *StalledError when the leader has not advanced for
// longer than the stall bound while the feed's head is ahead of its
// checkpoint.
func (a *app) relayWork(context.Context) (*Work, error) {
	if err := a.relay.Ready(); err != nil {
		return nil, err
	}
	st := a.relay.Stats()
	w := &Work{Leading: st.Leader, Holder: st.Lease.Holder, Token: st.Lease.Token, LagEvents: int64(min(st.LagEvents, math.MaxInt64))}
	if !st.Lease.Expires.IsZero() {
		w.LeaseExpires = &st.Lease.Expires
	}
	if st.LeaderProgressAt.IsZero() {
		return w, nil // nothing known of the leader's progress yet
	}
	now := time.Now()
	age := max(now.Sub(st.LeaderProgressAt), 0)
	if since := a.ops.leaderFor(st.Lease.Token, now); !since.IsZero() {
		// A new leader gets the bound to advance: its progress is, until
		// it moves the checkpoint, its predecessor's.
		age = min(age, now.Sub(since))
	}
	secs := age.Seconds()
	w.ProgressAgeSeconds = &secs
	if st.LagEvents > 0 && age > a.ops.stallAfter {
		return w, &StalledError{Work: "relay", Holder: st.Lease.Holder, Token: st.Lease.Token, Age: age,
			Lag: w.LagEvents, Bound: a.ops.stallAfter}
	}
	return w, nil
}

// projectionWork reports the partitions this process holds, the owner of
// partition 0 and the slowest projection's lag (read from Redis and the
// store under ctx's deadline), and fails with a *StalledError when a
// partition with lag has not advanced, as the probes saw it, for longer
// than the stall bound: its runner is frozen or cut off and not replaced,
// or no runner holds it.
func (a *app) projectionWork(ctx context.Context) (*Work, error) {
	if err := a.runner.Ready(); err != nil {
		return nil, err
	}
	w := &Work{Partitions: map[string][]int{}}
	now := time.Now()
	var stalled *StalledError
	for _, name := range a.ops.projections {
		held := a.runner.Held(name)
		w.Partitions[name] = held
		w.Leading = w.Leading || len(held) > 0
		st, err := a.runner.Status(ctx, name)
		if err != nil {
			return w, fmt.Errorf("projection %s: status: %w", name, err)
		}
		if w.Holder == "" {
			w.Holder = st.Owner
		}
		w.LagEvents = max(w.LagEvents, st.LagEvents)
		for _, ps := range st.Parts {
			key := fmt.Sprintf("projection/%s/%d", name, ps.Partition)
			age := a.ops.unchangedFor(key, ps.Checkpoint.String()+"/"+ps.Verified.String(), ps.LeaseToken, now)
			if ps.LagEvents > 0 && age > a.ops.stallAfter && (stalled == nil || age > stalled.Age) {
				work := fmt.Sprintf("projection %s partition %d", name, ps.Partition)
				if ps.Owner == "" {
					work += " (no runner holds it)"
				}
				stalled = &StalledError{Work: work, Holder: ps.Owner, Token: ps.LeaseToken, Age: age, Lag: ps.LagEvents, Bound: a.ops.stallAfter}
			}
		}
	}
	if stalled != nil {
		return w, stalled
	}
	return w, nil
}

// transferWork reports who holds the transfer process's lease and how far
// its partition trails the feed (read under ctx's deadline), and fails
// with a *StalledError when its checkpoint has not moved for longer than
// the stall bound while the feed's head is ahead of it.
func (a *app) transferWork(ctx context.Context) (*Work, error) {
	if err := a.process.Ready(); err != nil {
		return nil, err
	}
	w := &Work{LagEvents: -1}
	cur, ok, err := a.svc.leases.Current(ctx, saga.LeaseName(domain.TransferSagaName, 0))
	if err != nil {
		return w, fmt.Errorf("transfer process's lease: %w", err)
	}
	if ok {
		w.Holder, w.Token, w.LeaseExpires = cur.Holder, cur.Token, &cur.Expires
		w.Leading = strings.HasPrefix(cur.Holder, ownHolderPrefix())
	}
	head, err := a.svc.store.Head(ctx)
	if err != nil {
		return w, fmt.Errorf("feed head: %w", err)
	}
	parts, err := a.svc.sagas.Progress(ctx, domain.TransferSagaName)
	if err != nil {
		return w, fmt.Errorf("transfer process's progress: %w", err)
	}
	var ckpt eventstore.Position
	var token uint64
	for _, p := range parts {
		if p.Partition == 0 {
			ckpt, token = p.Checkpoint, p.Token
		}
	}
	w.LagEvents = eventstore.EventsBetween(ckpt, head)
	// Judged by this process's probes, not by the store's UpdatedAt: a
	// database clock that differs from this one cannot fake a stall.
	age := a.ops.unchangedFor("saga/"+domain.TransferSagaName+"/0", ckpt.String(), token, time.Now())
	secs := age.Seconds()
	w.ProgressAgeSeconds = &secs
	if w.LagEvents > 0 && age > a.ops.stallAfter {
		return w, &StalledError{Work: "transfer process", Holder: w.Holder, Token: w.Token, Age: age, Lag: w.LagEvents, Bound: a.ops.stallAfter}
	}
	return w, nil
}

// ownHolderPrefix is how the lease holders of this process begin (see
// lease.DefaultHolder: host/pid/random).
func ownHolderPrefix() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	return fmt.Sprintf("%s/%d/", host, os.Getpid())
}

// publicReason is what /readyz tells anyone about a failed check.
func publicReason(err error) string {
	var stalled *StalledError
	switch {
	case errors.As(err, &stalled):
		return stalled.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	case errors.Is(err, outbox.ErrNotStarted):
		return "starting"
	case errors.Is(err, outbox.ErrStopped):
		return "stopped"
	}
	return "unreachable or failing (details in the server's log)"
}

// readiness runs the checks concurrently, each under checkTimeout, and
// returns within readyTimeout: a check that has not answered by then is
// reported timed out, and left to finish in the background.
func (a *app) readiness(ctx context.Context) Readiness {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	cs := a.checks()
	res := Readiness{Status: statusOK, Checks: make([]CheckResult, len(cs))}
	type outcome struct {
		i int
		r CheckResult
	}
	done := make(chan outcome, len(cs))
	start := time.Now()
	pending := map[int]bool{}
	for i, c := range cs {
		if !a.ops.begin(c.name) {
			res.Checks[i] = CheckResult{Name: c.name, Status: statusFailed, Error: publicReason(context.DeadlineExceeded),
				detail: errors.New("still running since an earlier probe")}
			continue
		}
		pending[i] = true
		go func() {
			defer a.ops.end(c.name)
			cctx, cancel := context.WithTimeout(ctx, checkTimeout)
			defer cancel()
			w, err := c.run(cctx)
			done <- outcome{i, result(c.name, w, err, time.Since(start))}
		}()
	}
	for len(pending) > 0 {
		select {
		case o := <-done:
			res.Checks[o.i] = o.r
			delete(pending, o.i)
		case <-ctx.Done():
			for i := range pending {
				res.Checks[i] = result(cs[i].name, nil, fmt.Errorf("no answer: %w", context.DeadlineExceeded), time.Since(start))
			}
			pending = nil
		}
	}
	for _, r := range res.Checks {
		if r.Status != statusOK {
			res.Status = statusUnavailable
		}
	}
	return res
}

// result makes the outcome of a check. The public body says what failed,
// not how: errors of drivers name users, databases and addresses. The
// details go to the log.
func result(name string, w *Work, err error, took time.Duration) CheckResult {
	r := CheckResult{Name: name, Status: statusOK, Work: w, LatencyMS: float64(took.Microseconds()) / 1000}
	if err != nil {
		r.Status, r.Error, r.detail = statusFailed, publicReason(err), err
		if _, ok := errors.AsType[*StalledError](err); ok {
			r.Status = statusStalled
		}
	}
	return r
}

// ready answers GET /readyz: 200 when every check passes, 503 otherwise.
func (a *app) ready(w http.ResponseWriter, r *http.Request) {
	res := a.readiness(r.Context())
	status := http.StatusOK
	if res.Status != statusOK {
		status = http.StatusServiceUnavailable
		for _, c := range res.Checks {
			if c.Status != statusOK {
				a.log.WarnContext(r.Context(), "bank: not ready", "check", c.Name, "status", c.Status,
					"err", redact.URLs(fmt.Sprint(c.detail)))
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
