package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/memstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/examples/bank/api"
	"github.com/eskit/eskit/examples/bank/domain"
	"github.com/eskit/eskit/examples/bank/readmodel"
	"github.com/eskit/eskit/internal/infra/embedded"
	"github.com/eskit/eskit/internal/infra/redisconn"
	"github.com/eskit/eskit/internal/redact"
	"github.com/eskit/eskit/lease"
	"github.com/eskit/eskit/natsevent"
	"github.com/eskit/eskit/outbox"
	"github.com/eskit/eskit/projection"
	"github.com/eskit/eskit/querybus"
	"github.com/eskit/eskit/saga"
	"github.com/eskit/eskit/snapshot"
	"github.com/eskit/eskit/telemetry"
	"github.com/eskit/eskit/telemetry/promexport"
)

// Roles a process can take (-role, comma-separated).
const (
	roleAll       = "all"
	roleAPI       = "api"
	roleRelay     = "relay"
	roleProjector = "projector"
	roleProcess   = "process"
)

var knownRoles = []string{roleAll, roleAPI, roleRelay, roleProjector, roleProcess}

// roles is the set of roles of a process.
type roles map[string]bool

func parseRoles(s string) (roles, error) {
	r := roles{}
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if !slices.Contains(knownRoles, p) {
			return nil, fmt.Errorf("unknown role %q (want %s, or several joined by commas)", p, strings.Join(knownRoles, ", "))
		}
		if p == roleAll {
			for _, k := range knownRoles[1:] {
				r[k] = true
			}
			continue
		}
		r[p] = true
	}
	return r, nil
}

func (r roles) has(role string) bool { return r[role] }

// Names in the services.
const (
	relayName      = "bank.relay"
	commandTimeout = 10 * time.Second
	// queryTimeout bounds a query, its read-your-writes wait included.
	queryTimeout = 5 * time.Second
)

// services are the infrastructure the bank runs on: an event store, and
// (for the roles that need them) JetStream and Redis.
type services struct {
	store     eventstore.Store
	pool      *pgxpool.Pool // the store's; nil in the embedded mode
	schema    string        // the store's
	js        jetstream.JetStream
	rdb       redis.UniversalClient
	snapshots snapshot.Store
	// sagas keeps the transfer process's instances, outboxes and
	// checkpoints; leases elects the process that runs it.
	sagas  saga.Store
	leases lease.Store
	// subjectPrefix is the relay's subject prefix (the stream's name is
	// derived from it); redisPrefix the projections' key prefix. Both are
	// -prefix unless told otherwise.
	subjectPrefix string
	redisPrefix   string
	// replicas is the JetStream stream's replica count when created or
	// raised; partitions the read models' partition count; readModels
	// where they live (readModelsRedis, the default, or
	// readModelsPostgres: the store's database and schema).
	replicas   int
	partitions int
	readModels string
	// metrics is the process's meter provider, served at /metrics;
	// telemetry passes it to every instrumented component.
	metrics   *promexport.Exporter
	telemetry []telemetry.Option
	closers   []func()
}

// Where the read models live (-readmodels).
const (
	readModelsRedis    = "redis"
	readModelsPostgres = "postgres"
)

// readModelTarget returns the read models' projection target: in the
// store's database and schema with -readmodels postgres, else in Redis
// (nil when there is none).
func (s *services) readModelTarget() projection.Target {
	switch {
	case s.readModels == readModelsPostgres && s.pool != nil:
		return projection.Postgres(s.pool, s.schema)
	case s.readModels != readModelsPostgres && s.rdb != nil:
		return projection.Redis(s.rdb)
	}
	return nil
}

// initTelemetry makes the Prometheus exporter whose meter provider every
// eskit component of the process records into. Tracing uses the
// OpenTelemetry global tracer provider, which does nothing unless the
// program installs one.
func (s *services) initTelemetry() error {
	exp, err := promexport.New(promexport.WithRuntimeMetrics())
	if err != nil {
		return fmt.Errorf("set up metrics: %w", err)
	}
	s.closers = append(s.closers, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = exp.Shutdown(ctx)
	})
	s.metrics = exp
	s.telemetry = []telemetry.Option{telemetry.WithMeterProvider(exp.MeterProvider())}
	return nil
}

func (s *services) close() {
	for _, c := range slices.Backward(s.closers) {
		c()
	}
	s.closers = nil
}

func (s *services) embedded() bool { return s.pool == nil }

// streamName is the JetStream stream of the relay's subjects.
func (s *services) streamName() string { return natsevent.StreamName(s.subjectPrefix) }

// startEmbedded starts everything in the process: an in-memory store,
// JetStream (natstest) and a Redis-compatible server (miniredis).
func startEmbedded(ctx context.Context, subjectPrefix, redisPrefix string) (_ *services, err error) {
	s := &services{store: memstore.New(), snapshots: snapshot.NewMemory(), sagas: saga.NewMemoryStore(),
		leases: lease.NewMemoryStore(), subjectPrefix: subjectPrefix, redisPrefix: redisPrefix}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if err := s.initTelemetry(); err != nil {
		return nil, err
	}
	ns, err := embedded.StartNATS(embedded.NATSOptions{})
	if err != nil {
		return nil, fmt.Errorf("start the embedded NATS server: %w", err)
	}
	s.closers = append(s.closers, ns.Close)
	if err := s.connectNATS(ctx, ns.URL()); err != nil {
		return nil, err
	}
	rs, err := embedded.StartRedis("")
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, rs.Close)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	s.closers = append(s.closers, func() { _ = rdb.Close() })
	s.rdb = rdb
	return s, nil
}

// connectReal connects to the services named by the URLs; each may be
// empty when no role of the process needs it.
func connectReal(ctx context.Context, pgURL, natsURL, redisURL, schema, subjectPrefix, redisPrefix string) (_ *services, err error) {
	s := &services{schema: schema, subjectPrefix: subjectPrefix, redisPrefix: redisPrefix}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if err := s.initTelemetry(); err != nil {
		return nil, err
	}
	pool, err := pgxpool.New(ctx, pgURL)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	s.closers = append(s.closers, pool.Close)
	if err := s.usePool(ctx, pool, schema); err != nil {
		return nil, err
	}
	if natsURL != "" {
		if err := s.connectNATS(ctx, natsURL); err != nil {
			return nil, err
		}
	}
	if redisURL != "" {
		// A single server, or a Redis Cluster (several seed addresses:
		// see internal/redisconn), tuned for fast failover.
		rdb, err := redisconn.Open(ctx, redisURL, redisconn.WithPing())
		if err != nil {
			return nil, fmt.Errorf("connect to Redis: %w", err)
		}
		s.closers = append(s.closers, func() { _ = rdb.Close() })
		s.rdb = rdb
	}
	return s, nil
}

// usePool makes a PostgreSQL store in schema (migrating it) on pool; the
// snapshots, the transfer process's instances, checkpoints and leases, and
// the relay's checkpoints live where the store does.
func (s *services) usePool(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	store, err := pgstore.New(ctx, pool, pgstore.WithSchema(schema), pgstore.WithAutoMigrate(),
		pgstore.WithTelemetry(s.telemetry...))
	if err != nil {
		return fmt.Errorf("open the event store: %w", err)
	}
	s.closers = append(s.closers, func() { store.Close() })
	sagas, err := pgstore.NewSagaStore(store.Pool(), store.Schema())
	if err != nil {
		return fmt.Errorf("open the saga store: %w", err)
	}
	s.pool, s.schema, s.store, s.sagas, s.leases = store.Pool(), store.Schema(), store, sagas, store.Leases()
	s.snapshots = store.Snapshots()
	return nil
}

func (s *services) connectNATS(ctx context.Context, url string) error {
	nc, err := nats.Connect(url, append(outbox.ConnectOptions(), nats.Name("eskit-bank"))...)
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", redact.URLs(url), err)
	}
	s.closers = append(s.closers, nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("JetStream: %w", err)
	}
	s.js = js
	return nil
}

// app is the bank wired for the roles of one process.
type app struct {
	svc      *services
	roles    roles
	log      *slog.Logger
	bank     *domain.Bank
	commands *commandbus.Bus
	queries  *querybus.Bus
	reader   *projection.Reader
	relay    *outbox.Relay      // with the relay role
	runner   *projection.Runner // with the projector role
	process  *transferWorker    // with the process role
	// api serves the bank's API (with the api role); handler serves it
	// with the operational endpoints (see routes).
	api     http.Handler
	handler http.Handler
	// ops is what /readyz keeps between probes (see ops.go).
	ops opsState
}

type appOptions struct {
	// queryTimeout bounds queries, read-your-writes waits included
	// (queryTimeout when 0).
	queryTimeout time.Duration
	// leaseTTL is the projections' and the transfer process's lease
	// (their defaults when 0).
	leaseTTL time.Duration
	// tokens are the API's callers (required with the api role).
	tokens *api.Tokens
	// relay are extra options of the relay (tests).
	relay []outbox.Option
	// stallAfter is how long a leader may go without advancing while
	// there is lag before /readyz reports its work stalled (2 × the lease
	// TTL when 0; see defaultStallFactor).
	stallAfter time.Duration
}

func newApp(ctx context.Context, svc *services, rs roles, log *slog.Logger, opts appOptions) (_ *app, err error) {
	a := &app{svc: svc, roles: rs, log: log}
	a.ops.stallAfter = cmp.Or(opts.stallAfter, defaultStallFactor*cmp.Or(opts.leaseTTL, lease.DefaultTTL))
	needs := func(what string, ok bool, roles ...string) error {
		for _, r := range roles {
			if rs.has(r) && !ok {
				return fmt.Errorf("the %s role needs %s", r, what)
			}
		}
		return nil
	}
	onPostgres := svc.readModels == readModelsPostgres
	if err := errors.Join(
		needs("NATS (ESKIT_NATS_URL)", svc.js != nil, roleRelay, roleProjector),
		needs("Redis (ESKIT_REDIS_URL), or -readmodels postgres", onPostgres || svc.rdb != nil, roleAPI, roleProjector),
		needs("the PostgreSQL store for -readmodels postgres", !onPostgres || svc.pool != nil, roleAPI, roleProjector),
	); err != nil {
		return nil, err
	}
	a.bank, err = domain.New(svc.store,
		domain.WithSnapshots(svc.snapshots, snapshot.EveryN(50)),
		domain.WithRepositoryOptions(aggregate.WithLogger(log), aggregate.WithMetadataFrom(commandbus.MetadataFrom)))
	if err != nil {
		return nil, err
	}
	a.commands = commandbus.New(commandbus.WithMiddleware(
		commandbus.Telemetry(svc.telemetry...),
		commandbus.Logging(log),
		commandbus.Validation(),
		commandbus.Timeout(commandTimeout),
		commandbus.Retry(commandbus.RetryPolicy{}),
	))
	if err := api.RegisterCommands(a.commands, a.bank); err != nil {
		return nil, err
	}
	target := svc.readModelTarget()
	if target != nil {
		if a.reader, err = projection.NewReaderOn(target, svc.redisPrefix, svc.store); err != nil {
			return nil, err
		}
	}
	if rs.has(roleRelay) {
		if a.relay, err = newRelay(svc, log, opts.relay); err != nil {
			return nil, err
		}
	}
	if rs.has(roleProjector) {
		host, _ := os.Hostname()
		ropts := []projection.Option{
			projection.WithPrefix(svc.redisPrefix),
			projection.WithJetStream(svc.js, svc.streamName()),
			projection.WithLogger(log),
			projection.WithTelemetry(svc.telemetry...),
			projection.WithOwner(fmt.Sprintf("%s-%d", host, os.Getpid())),
		}
		if opts.leaseTTL > 0 {
			ropts = append(ropts, projection.WithLease(opts.leaseTTL, 0))
		}
		rmOpts := []readmodel.Option{readmodel.LogTransfersFinished(log), readmodel.WithPartitions(svc.partitions)}
		projs := readmodel.Projections(a.bank.Registry(), rmOpts...)
		if onPostgres {
			projs = readmodel.PostgresProjections(a.bank.Registry(), svc.pool, rmOpts...)
		}
		for _, p := range projs {
			a.ops.projections = append(a.ops.projections, p.Name())
		}
		a.runner, err = projection.NewRunnerOn(target, svc.store, projs, ropts...)
		if err != nil {
			return nil, err
		}
	}
	if rs.has(roleAPI) {
		var waiter querybus.CheckpointWaiter = querybus.CheckpointWaiterFunc(a.reader.WaitFor)
		if a.runner != nil {
			waiter = querybus.CheckpointWaiterFunc(a.runner.WaitFor)
		}
		qt := cmp.Or(opts.queryTimeout, queryTimeout)
		a.queries = querybus.New(
			querybus.WithWaiter(waiter),
			querybus.WithWaitTimeout(qt),
			querybus.WithMiddleware(querybus.Telemetry(svc.telemetry...), querybus.Logging(log), querybus.Timeout(qt)),
		)
		var q *readmodel.Queries
		if onPostgres {
			q, err = readmodel.NewPostgresQueries(svc.pool, a.reader)
		} else {
			q, err = readmodel.NewQueries(svc.rdb, a.reader)
		}
		if err != nil {
			return nil, err
		}
		if err := readmodel.Register(a.queries, q); err != nil {
			return nil, err
		}
		a.api, err = api.NewHandler(api.Config{Commands: a.commands, Queries: a.queries, Tokens: opts.tokens, Logger: log})
		if err != nil {
			return nil, err
		}
	}
	if rs.has(roleProcess) {
		if a.process, err = newTransferWorker(a.bank, svc, log, opts.leaseTTL); err != nil {
			return nil, err
		}
	}
	a.handler = a.routes()
	return a, nil
}

// newRelay returns the relay of the bank's events. On PostgreSQL it takes
// its database and schema from the store and elects its leader there;
// embedded, one process holds the election and the checkpoint in memory.
func newRelay(svc *services, log *slog.Logger, extra []outbox.Option) (*outbox.Relay, error) {
	opts := []outbox.Option{outbox.WithPrefix(svc.subjectPrefix), outbox.WithName(relayName),
		outbox.WithLogger(log), outbox.WithTelemetry(svc.telemetry...)}
	if svc.embedded() {
		opts = append(opts, outbox.WithCheckpoints(outbox.NewMemoryCheckpoints()))
	}
	return outbox.NewRelay(svc.store, nil, svc.js, append(opts, extra...)...)
}

// close waits for pending snapshots.
func (a *app) close() {
	if err := a.bank.Close(); err != nil {
		a.log.Error("bank: close", "err", err)
	}
}

// runWorkers runs the relay, the projection runner and the transfer
// process, as the roles say, until ctx ends or one of them fails: then it
// stops the others and returns that failure. The relay and the runner
// fail only when they cannot work at all (a NATS server too old for them,
// a projection's stored configuration that does not match, PostgreSQL or
// Redis refusing them): no retry would help, so the process must not go
// on as if it served. Every worker has returned when runWorkers does: the
// relay's leader lock and the runner's leases are released, so standbys
// take over at once.
func (a *app) runWorkers(ctx context.Context) error {
	svc := a.svc
	if a.roles.has(roleRelay) || a.roles.has(roleProjector) {
		cfg := outbox.StreamConfig{Prefix: svc.subjectPrefix, Description: "eskit sample bank events", Replicas: svc.replicas}
		if svc.embedded() {
			cfg.Storage = jetstream.MemoryStorage
		}
		if _, err := outbox.EnsureStream(ctx, svc.js, cfg); err != nil {
			return fmt.Errorf("provision the JetStream stream: %w", err)
		}
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var (
		wg      sync.WaitGroup
		failed  sync.Once
		failure error // the first worker's failure
	)
	goRun := func(name string, fn func(ctx context.Context) error) {
		wg.Go(func() {
			a.log.Info("bank: started", "worker", name)
			if err := fn(ctx); err != nil {
				a.log.Error("bank: worker failed; stopping", "worker", name, "err", err)
				failed.Do(func() { failure = fmt.Errorf("%s: %w", name, err) })
				stop()
				return
			}
			a.log.Info("bank: stopped", "worker", name)
		})
	}
	if a.relay != nil {
		goRun("relay", a.relay.Run)
	}
	if a.runner != nil {
		goRun("projections", a.runner.Run)
	}
	if a.process != nil {
		goRun("transfer process", a.process.Run)
	}
	<-ctx.Done()
	wg.Wait()
	return failure
}

// transferWorker runs the transfer process (a saga runner) while it holds
// the process's lease: on PostgreSQL the lease and the saga's state live
// in the store's schema, so any number of processes may take the process
// role, one runs it and a standby takes over within the lease's TTL; every
// write of the runner is fenced by the lease's token, so one that froze
// and lost its lease writes nothing when it wakes. Embedded, both are in
// memory.
type transferWorker struct {
	process *domain.TransferProcess
	svc     *services
	lopts   []lease.Option
	log     *slog.Logger
}

func newTransferWorker(bank *domain.Bank, svc *services, log *slog.Logger, ttl time.Duration) (*transferWorker, error) {
	lopts := []lease.Option{lease.WithLogger(log)}
	if ttl > 0 {
		lopts = append(lopts, lease.WithTTL(ttl))
	}
	p, err := domain.NewTransferProcess(bank, svc.sagas,
		saga.WithLease(svc.leases, lopts...), saga.WithLogger(log), saga.WithTelemetry(svc.telemetry...))
	if err != nil {
		return nil, err
	}
	return &transferWorker{process: p, svc: svc, lopts: lopts, log: log}, nil
}

// Run runs the process until ctx ends, then returns nil: it stands by
// while another process holds the lease, and retries the store's faults
// itself; it returns a start-up error (an invalid lease configuration) at
// once. The runner's own life cycle (saga.Runner.Run, Started, Ready).
func (w *transferWorker) Run(ctx context.Context) error {
	if err := w.adoptLegacy(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("transfer process: take over from the earlier transfer process: %w", err)
	}
	return w.process.Run(ctx)
}

// legacyProcessName is the checkpoint name of the transfer process of
// earlier versions of the bank, in <schema>.checkpoints.
const legacyProcessName = "bank.transfer-process"

// adoptLegacy takes over from the transfer process of earlier versions of
// the bank, which kept its checkpoint in <schema>.checkpoints: the saga
// has never run here (no partition of it was ever claimed) while that
// checkpoint exists, so it adopts the feed up to it (saga.Runner.Adopt:
// the instances of the transfers in flight get their state, and nothing
// the earlier process sent is sent again), then runs from there. Without
// it, the saga would carry out every transfer of the history once more
// (the earlier process's commands had other IDs). It holds the saga's
// lease meanwhile, so processes starting together adopt once.
func (w *transferWorker) adoptLegacy(ctx context.Context) error {
	svc := w.svc
	if svc.pool == nil {
		return nil
	}
	pending := func() (eventstore.Position, bool, error) {
		parts, err := svc.sagas.Progress(ctx, domain.TransferSagaName)
		if err != nil || len(parts) > 0 {
			return eventstore.Position{}, false, err
		}
		var tx, seq int64
		err = svc.pool.QueryRow(ctx, `SELECT pos_tx, pos_seq FROM `+pgx.Identifier{svc.schema, "checkpoints"}.Sanitize()+` WHERE name = $1`,
			legacyProcessName).Scan(&tx, &seq)
		if errors.Is(err, pgx.ErrNoRows) {
			return eventstore.Position{}, false, nil
		}
		return eventstore.Position{Tx: uint64(tx), Seq: uint64(seq)}, err == nil, err
	}
	if _, ok, err := pending(); err != nil || !ok {
		return err
	}
	k, err := lease.NewKeeper(svc.leases, saga.LeaseName(domain.TransferSagaName, 0), w.lopts...)
	if err != nil {
		return err
	}
	h, err := k.Hold(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = h.Release(context.WithoutCancel(ctx)) }()
	upTo, ok, err := pending() // another process may have adopted meanwhile
	if err != nil || !ok {
		return err
	}
	w.log.Warn("transfer process: taking over from the earlier transfer process at its checkpoint", "checkpoint", upTo.String())
	return w.process.Adopt(h.Context(), upTo)
}

// Started returns a channel closed once Run has started.
func (w *transferWorker) Started() <-chan struct{} { return w.process.Started() }

// Ready returns nil while Run runs, whether this process holds the lease
// or stands by, as the relay's and the projection runner's do; why not
// otherwise (lifecycle.ErrNotStarted, lifecycle.ErrStopped).
func (w *transferWorker) Ready() error { return w.process.Ready() }

// parseStreamID returns the ID of an account or transfer stream.
func parseStreamID(stream string) (uuid.UUID, bool) {
	if id, ok := domain.ParseAccountStream(stream); ok {
		return id, true
	}
	return domain.ParseTransferStream(stream)
}
