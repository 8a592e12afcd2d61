// Command bank is eskit's sample bank: accounts, deposits, withdrawals and
// transfers over event sourcing and CQRS, with an HTTP API.
//
// With no services configured it runs everything in the process: an
// in-memory event store, an embedded JetStream server and an embedded
// Redis-compatible server.
//
//	go run ./examples/bank                 # serve the API on :8080
//	go run ./examples/bank -addr :9090
//	go run ./examples/bank demo            # a scripted tour, printed
//
// With ESKIT_POSTGRES_URL (and ESKIT_NATS_URL, ESKIT_REDIS_URL as the roles
// need them; flags -postgres, -nats, -redis mirror them) it runs on the real
// services: PostgreSQL holds the events (migrated at start), the relay
// publishes them to JetStream, projections keep the read models in Redis,
// or with -readmodels postgres (ESKIT_READMODELS) in the store's
// PostgreSQL database (the default when no Redis is configured).
// -role splits the work between processes (comma-separated):
//
//	api        the HTTP API (PostgreSQL, Redis unless -readmodels postgres)
//	relay      the outbox relay to JetStream (PostgreSQL, NATS)
//	projector  the projection runner (PostgreSQL, NATS, Redis unless -readmodels postgres)
//	process    the transfer process (PostgreSQL)
//	all        all of them (the default)
//
// Any number of processes may take each role. Relays elect one leader
// (an expiring lease in PostgreSQL); projection runners hold a lease per
// projection partition in the read models' store; the transfer process (a
// saga runner) runs under a lease in PostgreSQL, its writes fenced by the
// lease's token; the others stand by and take over when the active one
// stops. API processes share nothing. On SIGINT or SIGTERM a
// process stops taking requests, finishes the ones in flight and waits for
// its workers to stop, which releases their locks and leases: standbys
// take over at once. A relay or projection runner that cannot work at all
// (a NATS server too old for it, say) stops the process with its error.
//
// -prefix (default bank) names the deployment in NATS and Redis: subjects
// bank.…, the JetStream stream BANK, read-model keys bank:…; the store's
// -schema holds the events, snapshots, every checkpoint, the transfer
// process's saga instances and the leases.
//
// The API needs a token on every request (Authorization: Bearer <token>):
// -tokens (ESKIT_BANK_TOKENS) lists principal=token pairs; the embedded mode
// generates a development token and prints it. An account answers only to
// the principal that opened it.
//
// Every process, whatever its roles, serves on -addr:
//
//	GET /livez    200 while the process runs (/healthz is an alias)
//	GET /readyz   200 when every service its roles use answers and its relay
//	              and projection runner have started, 503 otherwise, with
//	              each check's status, error and latency
//	GET /metrics  eskit's metrics (appends, commands, queries, relay and
//	              projection lag, parked records) and the Go runtime's, for
//	              Prometheus
//
// Commands and queries record OpenTelemetry spans that continue the trace
// context of the request's traceparent header, through the events' metadata
// to the relay and the projections. -trace exports them: to an OTLP/HTTP
// collector (the default when OTEL_EXPORTER_OTLP_ENDPOINT is set) or as
// JSON on stdout; without it they go nowhere.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/eskit/eskit/examples/bank/api"
	"github.com/eskit/eskit/examples/bank/domain"
	"github.com/eskit/eskit/natsevent"
)

// Default listen addresses.
const (
	embeddedAddr = "127.0.0.1:8080"
	realAddr     = ":8080"
)

// Environment variables naming the services.
const (
	envPostgres   = "ESKIT_POSTGRES_URL"
	envNATS       = "ESKIT_NATS_URL"
	envRedis      = "ESKIT_REDIS_URL"
	envReadModels = "ESKIT_READMODELS"
	envReplicas   = "ESKIT_NATS_REPLICAS"
	envPartitions = "ESKIT_PARTITIONS"
	envTokens     = "ESKIT_BANK_TOKENS"
)

// defaultPrefix names the bank in NATS and Redis (-prefix).
const defaultPrefix = "bank"

// devPrincipal is the principal of the development token the embedded
// mode generates when no token is configured.
const devPrincipal = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "bank:", err)
		}
		os.Exit(1)
	}
}

// config is the command line.
type config struct {
	demo          bool
	addr          string
	postgres      string
	nats          string
	redis         string
	role          string
	schema        string
	prefix        string
	subjectPrefix string
	redisPrefix   string
	readModels    string
	replicas      int
	partitions    int
	tokens        string
	logLevel      slog.Level
	trace         string // trace exporter (tracing.go)
}

func parse(args []string, stderr io.Writer) (config, error) {
	var c config
	name := "bank"
	if len(args) > 0 && args[0] == "demo" {
		c.demo, name, args = true, "bank demo", args[1:]
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.addr, "addr", "", "HTTP listen address (default "+embeddedAddr+" embedded, "+realAddr+" on real services; -addr :8080 binds every interface)")
	fs.StringVar(&c.postgres, "postgres", os.Getenv(envPostgres), "PostgreSQL URL ("+envPostgres+"); empty: run embedded")
	fs.StringVar(&c.nats, "nats", os.Getenv(envNATS), "NATS URL ("+envNATS+")")
	fs.StringVar(&c.redis, "redis", os.Getenv(envRedis), "Redis URL ("+envRedis+")")
	fs.StringVar(&c.role, "role", roleAll, "roles of this process: all, api, relay, projector, process (comma-separated)")
	fs.StringVar(&c.schema, "schema", "eskit", "PostgreSQL schema of the event store")
	fs.StringVar(&c.prefix, "prefix", defaultPrefix,
		"the deployment's name in NATS and Redis: subjects <prefix>.…, the JetStream stream <PREFIX>, read-model keys <prefix>:…")
	fs.StringVar(&c.subjectPrefix, "subject-prefix", "", "NATS subject prefix, when it differs from -prefix (the stream is its upper-case)")
	fs.StringVar(&c.redisPrefix, "redis-prefix", "", "prefix of the read models' Redis keys, when it differs from -prefix (\"bank\" and \"bank:\" are the same keys)")
	fs.StringVar(&c.readModels, "readmodels", os.Getenv(envReadModels),
		"where the read models live: redis or postgres (the store's database) ("+envReadModels+"); redis by default when Redis is configured (and embedded), else postgres")
	fs.IntVar(&c.replicas, "replicas", envInt(envReplicas, 1),
		"replicas of the JetStream stream when it is created or raised ("+envReplicas+"); an existing stream with more keeps them")
	fs.IntVar(&c.partitions, "partitions", envInt(envPartitions, 1),
		"partitions of each read model ("+envPartitions+"); runners share them. Stored with the read model: changing it needs new projection names")
	fs.StringVar(&c.tokens, "tokens", os.Getenv(envTokens),
		"API tokens as principal=token,... ("+envTokens+"); required with the api role on real services, generated for principal "+devPrincipal+" when embedded")
	fs.TextVar(&c.logLevel, "log-level", slog.LevelInfo, "log level: DEBUG, INFO, WARN, ERROR")
	traceFlag(fs, &c.trace)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: %s [flags]\n       bank demo [flags]\n\n", "bank")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	c.subjectPrefix = cmp.Or(c.subjectPrefix, c.prefix)
	c.redisPrefix = cmp.Or(c.redisPrefix, c.prefix)
	if err := natsevent.ValidatePrefix(c.subjectPrefix); err != nil {
		return c, fmt.Errorf("-prefix %q: %w", c.subjectPrefix, err)
	}
	if c.addr == "" {
		// The embedded mode is for a developer's machine: not reachable
		// from the network unless asked for.
		c.addr = embeddedAddr
		if c.postgres != "" {
			c.addr = realAddr
		}
	}
	if c.replicas < 1 || c.replicas > 5 {
		return c, fmt.Errorf("-replicas %d: want 1 to 5", c.replicas)
	}
	if c.partitions < 1 || c.partitions > 256 {
		return c, fmt.Errorf("-partitions %d: want 1 to 256", c.partitions)
	}
	if c.postgres == "" && (c.nats != "" || c.redis != "") {
		return c, fmt.Errorf("NATS or Redis is configured without %s: set it too, or none of them to run embedded", envPostgres)
	}
	switch c.readModels {
	case "":
		c.readModels = readModelsRedis
		if c.postgres != "" && c.redis == "" {
			c.readModels = readModelsPostgres
		}
	case readModelsRedis:
	case readModelsPostgres:
		if c.postgres == "" {
			return c, fmt.Errorf("-readmodels %s needs PostgreSQL (%s); the embedded mode keeps them in its Redis", c.readModels, envPostgres)
		}
		// Redis is not used: the read models and their leases are in
		// PostgreSQL.
		c.redis = ""
	default:
		return c, fmt.Errorf("-readmodels %q: want %s or %s", domain.Excerpt(c.readModels), readModelsRedis, readModelsPostgres)
	}
	if c.postgres == "" && c.role != roleAll {
		return c, fmt.Errorf("-role=%s needs the real services (%s, ...); the embedded mode runs every role in one process", c.role, envPostgres)
	}
	return c, nil
}

// run runs the bank (or its demo) until ctx ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parse(args, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	stopTracing, err := startTracing(ctx, cfg.trace, stdout, log)
	if err != nil {
		return err
	}
	defer stopTracing()
	rs, err := parseRoles(cfg.role)
	if err != nil {
		return err
	}
	if cfg.demo {
		rs, _ = parseRoles(roleAll)
	}
	var svc *services
	if cfg.postgres == "" {
		log.Info("bank: no services configured; running embedded (in-memory store, in-process JetStream and Redis)")
		svc, err = startEmbedded(ctx, cfg.subjectPrefix, cfg.redisPrefix)
	} else {
		log.Info("bank: running on real services", "role", cfg.role, "schema", cfg.schema)
		svc, err = connectReal(ctx, cfg.postgres, cfg.nats, cfg.redis, cfg.schema, cfg.subjectPrefix, cfg.redisPrefix)
	}
	if err != nil {
		return err
	}
	defer svc.close()
	svc.replicas, svc.partitions, svc.readModels = cfg.replicas, cfg.partitions, cfg.readModels
	var opts appOptions
	switch {
	case cfg.demo:
		// The demo serves no HTTP: its API needs a token nobody uses.
		token, err := api.GenerateToken()
		if err != nil {
			return err
		}
		if opts.tokens, err = api.NewTokens(map[string]string{token: devPrincipal}); err != nil {
			return err
		}
	case rs.has(roleAPI):
		if opts.tokens, err = apiTokens(cfg, stdout); err != nil {
			return err
		}
	}
	a, err := newApp(ctx, svc, rs, log, opts)
	if err != nil {
		return err
	}
	defer a.close()
	if cfg.demo {
		return a.demo(ctx, stdout)
	}
	return a.serve(ctx, cfg.addr)
}

// apiTokens returns the configured API tokens. Without any, the embedded
// mode makes a development token and prints it (once, to stdout: it is
// the developer's to use); on real services it is an error, since
// replicas behind a load balancer must share their tokens.
func apiTokens(cfg config, stdout io.Writer) (*api.Tokens, error) {
	if cfg.tokens != "" {
		t, err := api.ParseTokens(cfg.tokens)
		if err != nil {
			return nil, fmt.Errorf("-tokens (%s): %w", envTokens, err)
		}
		return t, nil
	}
	if cfg.postgres != "" {
		return nil, fmt.Errorf("the api role needs API tokens: set -tokens or %s to principal=token,... (tokens of %d to %d bytes of [A-Za-z0-9-._~+/=])",
			envTokens, api.MinTokenLength, api.MaxTokenLength)
	}
	token, err := api.GenerateToken()
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(stdout, "bank: development API token for principal %q (valid for this process only; set -tokens to choose your own):\n\n  export TOKEN=%s\n\n", devPrincipal, token)
	return api.NewTokens(map[string]string{token: devPrincipal})
}

// serve runs the workers and the HTTP server (the API with the api role,
// the operational endpoints always) until ctx ends or the workers fail;
// then it stops taking requests, lets the ones in flight finish, and stops
// the workers.
func (a *app) serve(ctx context.Context, addr string) error {
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	srvCtx, stopServing := context.WithCancel(ctx)
	defer stopServing()
	workers := make(chan error, 1)
	go func() {
		err := a.runWorkers(workCtx)
		if err != nil {
			stopServing()
		}
		workers <- err
	}()
	srvErr := a.listen(srvCtx, addr)
	a.log.Info("bank: shutting down")
	stopWork()
	return errors.Join(srvErr, <-workers)
}

func (a *app) listen(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           a.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	url := "http://" + displayAddr(ln.Addr())
	a.log.Info("bank: listening", "url", url)
	if a.api != nil {
		a.log.Info("bank: try it: curl -s -X POST -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' " + url + `/accounts -d '{"owner":"Alice","currency":"EUR"}'`)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		return fmt.Errorf("shut the HTTP server down: %w", err)
	}
	return nil
}

// displayAddr turns a listen address into one a client can use.
func displayAddr(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

// envInt returns the integer in the environment variable, or def when it is
// unset or not a number (the flag's validation reports bad values).
func envInt(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
		return -1
	}
	return def
}
