// Package bench measures eskit's operations next to the raw infrastructure
// doing the same I/O, in the same run: appends through the repository next
// to plain INSERTs (commands on new streams, and on streams with a history
// and snapshots, with and without the state cache), bulk import next to
// COPY, loads and feed reads next to plain SELECTs, the relay next to raw JetStream publishes, projections next
// to raw Redis transactions (on one server and on a Redis Cluster), a
// partitioned projection on one runner process next to several, and the
// end-to-end latency from an append's commit to the read model. The eskit
// and baseline sides of a case alternate in rounds so that both see the
// same background load.
//
// A run creates its own database (eskit_bench_<random>), Redis key prefix
// and JetStream streams, and removes them when it ends; the cluster cases
// start a throwaway local Redis Cluster unless given one.
//
// project-partitioned starts runner processes by re-executing the running
// binary: a binary that runs the bench must call RunChildIfRequested
// before anything else (cmd/eskit does it in an init function).
package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/outbox"
)

// Config selects the services, the cases and their sizes.
type Config struct {
	// PostgresURL is the server the bench creates its database on; the
	// URL's database is only used to create and drop it.
	PostgresURL string
	// NATSURL is the NATS server with JetStream; empty starts a throwaway
	// local nats-server process (Debian's nats-server package) and stops it
	// at the end.
	NATSURL string
	// RedisURL is the Redis server.
	RedisURL string
	// RedisClusterURL is the Redis Cluster of the cluster cases
	// (redis+cluster://host1:port1,host2:port2,...); empty starts a
	// throwaway local one (3 masters + 3 replicas, redis-server and
	// redis-cli from Debian's redis-server and redis-tools packages) and
	// stops it at the end.
	RedisClusterURL string
	// Cases are the names of the cases to run (see CaseNames); empty runs
	// them all.
	Cases []string
	// Sizes sizes the cases.
	Sizes Sizes
	// Logger receives progress (slog.Default when nil).
	Logger *slog.Logger
	// Progress, when set, is called as each case starts (running names
	// it) and once all have run (running empty), with the number of
	// cases done of all.
	Progress func(done, total int, running string)
}

// Sizes sizes each case. Zero fields take the defaults of DefaultSizes.
type Sizes struct {
	// Rounds is how many alternating rounds a throughput case runs.
	Rounds int
	// AppendConcurrency lists the numbers of clients of append-1, handle
	// and handle-cached.
	AppendConcurrency []int
	// Append1 is how many commands each side handles with one client
	// (append-1, handle, handle-cached).
	Append1 int
	// Append1Parallel is how many commands each side handles with more
	// than one client (append-1, handle, handle-cached; it also sizes the
	// number of streams of the handle cases, up to 1,000).
	Append1Parallel int
	// Append100 is how many 100-event appends each side makes.
	Append100 int
	// Import is how many events each side imports.
	Import int
	// ImportBatch is how many events one Import (one COPY) carries.
	ImportBatch int
	// LoadEvents is the length of the loaded stream.
	LoadEvents int
	// LoadSnapshotEvery is the snapshot interval of the snapshotted load.
	LoadSnapshotEvery int
	// Loads is how many loads each side makes.
	Loads int
	// Feed is how many events the feed holds.
	Feed int
	// FeedPage is the page size of a feed read.
	FeedPage int
	// Relay is how many events the relay publishes.
	Relay int
	// Project is how many events the projections apply.
	Project int
	// ProjectCluster is how many events the projections on the Redis
	// Cluster apply.
	ProjectCluster int
	// Partitioned is how many events project-partitioned applies.
	Partitioned int
	// PartitionedRunners is the number of runner processes of the
	// scaled-out variant of project-partitioned (the other has one).
	PartitionedRunners int
	// PartitionedConcurrency is each runner process's concurrency
	// (projection.WithConcurrency), and how many calls of the modelled slow
	// service one process can have in flight.
	PartitionedConcurrency int
	// PartitionedApply is what one apply of project-partitioned costs (a
	// wait modelling a call to a slow service).
	PartitionedApply time.Duration
	// E2ERate is the append rate of e2e-latency, per second.
	E2ERate int
	// E2EDuration is how long e2e-latency appends.
	E2EDuration time.Duration
	// HTTP is how many deposits each side of http-deposit makes.
	HTTP int
	// HTTPClients is how many concurrent HTTP clients http-deposit uses.
	HTTPClients int
}

// DefaultSizes are sized so that the whole run takes about three and a
// half minutes on a two-core machine (well under six on a busy one);
// project-partitioned, whose applies wait 1 ms each, takes about 40 s of
// it.
func DefaultSizes() Sizes {
	return Sizes{
		Rounds:                 6,
		AppendConcurrency:      []int{1, 32},
		Append1:                3000,
		Append1Parallel:        12_000,
		Append100:              300,
		Import:                 150_000,
		ImportBatch:            10_000,
		LoadEvents:             10_000,
		LoadSnapshotEvery:      1_000,
		Loads:                  50,
		Feed:                   100_000,
		FeedPage:               1_000,
		Relay:                  150_000,
		Project:                150_000,
		ProjectCluster:         60_000,
		Partitioned:            24_000,
		PartitionedRunners:     3,
		PartitionedConcurrency: 2,
		PartitionedApply:       time.Millisecond,
		E2ERate:                1_000,
		E2EDuration:            15 * time.Second,
		HTTP:                   6_000,
		HTTPClients:            16,
	}
}

func (s Sizes) withDefaults() Sizes {
	d := DefaultSizes()
	set := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&s.Rounds, d.Rounds)
	set(&s.Append1, d.Append1)
	set(&s.Append1Parallel, d.Append1Parallel)
	set(&s.Append100, d.Append100)
	set(&s.Import, d.Import)
	set(&s.ImportBatch, d.ImportBatch)
	set(&s.LoadEvents, d.LoadEvents)
	set(&s.LoadSnapshotEvery, d.LoadSnapshotEvery)
	set(&s.Loads, d.Loads)
	set(&s.Feed, d.Feed)
	set(&s.FeedPage, d.FeedPage)
	set(&s.Relay, d.Relay)
	set(&s.Project, d.Project)
	set(&s.ProjectCluster, d.ProjectCluster)
	set(&s.Partitioned, d.Partitioned)
	set(&s.PartitionedRunners, d.PartitionedRunners)
	set(&s.PartitionedConcurrency, d.PartitionedConcurrency)
	if s.PartitionedApply <= 0 {
		s.PartitionedApply = d.PartitionedApply
	}
	set(&s.E2ERate, d.E2ERate)
	set(&s.HTTP, d.HTTP)
	set(&s.HTTPClients, d.HTTPClients)
	if s.E2EDuration <= 0 {
		s.E2EDuration = d.E2EDuration
	}
	if len(s.AppendConcurrency) == 0 {
		s.AppendConcurrency = d.AppendConcurrency
	}
	return s
}

// Result is one measurement: eskit's figure next to the baseline's.
type Result struct {
	// Name is the case's name.
	Name string `json:"name"`
	// Unit is the unit of Eskit and Baseline.
	Unit string `json:"unit"`
	// Eskit is eskit's figure.
	Eskit float64 `json:"eskit"`
	// Baseline is the raw infrastructure's figure (nil when the case has
	// no baseline).
	Baseline *float64 `json:"baseline"`
	// Ratio is Eskit / Baseline (nil without a baseline).
	Ratio *float64 `json:"ratio"`
	// Params are the case's sizes, the target and whether it was met, and
	// the peak memory of each side.
	Params map[string]any `json:"params"`

	// target is the bound set by withTarget, judged again once the case's
	// peak memory is known.
	target *target
}

// Variant returns the label that tells results of one case apart (for
// example "c=32"), or "".
func (r Result) Variant() string {
	v, _ := r.Params["variant"].(string)
	return v
}

// Target returns the result's target ("" if none) and whether it was met.
func (r Result) Target() (string, bool) {
	t, _ := r.Params["target"].(string)
	met, _ := r.Params["target_met"].(bool)
	return t, met
}

// Memory returns the peak memory recorded with the result.
func (r Result) Memory() (Memory, bool) {
	m, ok := r.Params["peak_memory"].(Memory)
	return m, ok
}

// target is a bound on a result's ratio or on eskit's figure, and
// optionally on eskit's peak RSS relative to the baseline's.
type target struct {
	ratio bool    // bound the ratio rather than eskit's figure
	min   bool    // a lower bound (else an upper bound)
	bound float64 // the bound
	// maxRSS, when set, bounds eskit's peak RSS to that many times the
	// baseline's.
	maxRSS float64
}

func (t target) String() string {
	what := "eskit"
	if t.ratio {
		what = "ratio"
	}
	op := "≤"
	if t.min {
		op = "≥"
	}
	s := fmt.Sprintf("%s %s %s", what, op, formatNumber(t.bound))
	if t.maxRSS > 0 {
		s += fmt.Sprintf(", rss ≤ %s×", formatNumber(t.maxRSS))
	}
	return s
}

func (t target) met(r Result) bool {
	v := r.Eskit
	if t.ratio {
		if r.Ratio == nil {
			return false
		}
		v = *r.Ratio
	}
	if t.maxRSS > 0 {
		m, ok := r.Memory()
		if !ok || m.RSSBase == 0 || float64(m.RSSEskit) > t.maxRSS*float64(m.RSSBase) {
			return false
		}
	}
	if t.min {
		return v >= t.bound
	}
	return v <= t.bound
}

// formatNumber prints v with three significant digits, or as an integer
// when it is large.
func formatNumber(v float64) string {
	switch {
	case v >= 1000 || v <= -1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 100 || v <= -100:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

// result builds a result from eskit's and the baseline's figures.
func result(name, unit string, eskit, base float64, params map[string]any) Result {
	r := Result{Name: name, Unit: unit, Eskit: eskit, Params: params}
	if r.Params == nil {
		r.Params = map[string]any{}
	}
	if base > 0 {
		r.Baseline = &base
		ratio := eskit / base
		r.Ratio = &ratio
	}
	return r
}

func (r Result) withTarget(t target) Result {
	r.target = &t
	r.Params["target"] = t.String()
	r.Params["target_met"] = t.met(r)
	return r
}

// Versions are the versions of the services the bench ran against.
type Versions struct {
	Postgres string `json:"postgres"`
	NATS     string `json:"nats"`
	Redis    string `json:"redis"`
	// RedisCluster describes the Redis Cluster of the cluster cases
	// (empty when none ran).
	RedisCluster string `json:"redis_cluster,omitempty"`
	Go           string `json:"go"`
	// NATSLocal is true when the bench started its own nats-server (it
	// was given no NATS URL).
	NATSLocal bool `json:"nats_local"`
	// CPUs is GOMAXPROCS.
	CPUs int `json:"cpus"`
	// Memory says how peak memory is measured.
	Memory string `json:"memory"`
}

// caseDef is one case: its name and the function that measures it.
type caseDef struct {
	name string
	run  func(ctx context.Context, e *env) ([]Result, error)
	// cluster: the case runs on a Redis Cluster.
	cluster bool
}

func cases() []caseDef {
	return []caseDef{
		{"append-1", runAppend1, false},
		{"append-100", runAppend100, false},
		{"handle", runHandle, false},
		{"handle-cached", runHandleCached, false},
		{"import", runImport, false},
		{"load", runLoad, false},
		{"feed", runFeed, false},
		{"relay", runRelay, false},
		{"project-live", runProjectLive, false},
		{"project-rebuild", runProjectRebuild, false},
		{"project-partitioned", runProjectPartitioned, false},
		{"project-live-pg", runProjectLivePG, false},
		{"project-rebuild-pg", runProjectRebuildPG, false},
		{"append-inline-pg", runAppendInlinePG, false},
		{"project-live-cluster", runProjectLiveCluster, true},
		{"project-rebuild-cluster", runProjectRebuildCluster, true},
		{"e2e-latency", runE2E, false},
		{"http-deposit", runHTTPDeposit, false},
	}
}

// CaseNames returns the names of every case, in the order they run.
func CaseNames() []string {
	var out []string
	for _, c := range cases() {
		out = append(out, c.name)
	}
	return out
}

// ClusterCaseNames returns the names of the cases that run on a Redis
// Cluster (selecting one starts the throwaway cluster unless
// Config.RedisClusterURL names one).
func ClusterCaseNames() []string {
	var out []string
	for _, c := range cases() {
		if c.cluster {
			out = append(out, c.name)
		}
	}
	return out
}

// Bench is an open bench run: its database, Redis prefix and NATS
// connection. Open it, Run it, then Close it.
type Bench struct {
	env      *env
	cases    []caseDef
	versions Versions
	closers  []func(context.Context) error
	progress func(done, total int, running string)
}

// env is what the cases share.
type env struct {
	sizes Sizes
	log   *slog.Logger
	// quiet is the logger of the components under test: warnings and
	// errors only.
	quiet    *slog.Logger
	dbURL    string
	pool     *pgxpool.Pool
	redisURL string
	rdb      *redis.Client
	prefix   string // Redis key prefix, ends with ":"
	// cluster is the Redis Cluster of the cluster cases (nil when none is
	// selected); its keys use prefix too.
	cluster *redis.ClusterClient
	// later are clean-ups registered by the cases' set-up, run (last
	// first) when the bench closes, before the other clean-ups.
	later []func(context.Context) error
	nc    *nats.Conn
	js    jetstream.JetStream
	// subjects is the base of the JetStream subject prefixes and stream
	// names of the run.
	subjects string
	mem      *memProbe
	// streams collects the JetStream streams to delete at the end.
	streams []string
}

// randomName returns prefix followed by 12 random hex digits.
func randomName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// Open checks the configuration, connects to the services, creates the
// run's database and reads the services' versions.
func Open(ctx context.Context, cfg Config) (_ *Bench, err error) {
	selected, err := selectCases(cfg.Cases)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	b := &Bench{cases: selected, progress: cfg.Progress}
	defer func() {
		if err != nil {
			_ = b.Close(context.WithoutCancel(ctx))
		}
	}()
	e := &env{sizes: cfg.Sizes.withDefaults(), log: log, mem: newMemProbe(),
		quiet: slog.New(minLevel{Handler: log.Handler(), min: slog.LevelWarn})}
	b.env = e
	b.closers = append(b.closers, func(context.Context) error { e.mem.close(); return nil })

	// PostgreSQL: a fresh database, dropped at the end.
	if e.dbURL, err = b.createDatabase(ctx, cfg.PostgresURL); err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(e.dbURL)
	if err != nil {
		return nil, fmt.Errorf("bench: PostgreSQL URL: %w", err)
	}
	pcfg.MaxConns = max(pcfg.MaxConns, 48)
	if e.pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		return nil, fmt.Errorf("bench: PostgreSQL: %w", err)
	}
	b.closers = append(b.closers, func(context.Context) error { e.pool.Close(); return nil })
	if err := e.pool.QueryRow(ctx, "SHOW server_version").Scan(&b.versions.Postgres); err != nil {
		return nil, fmt.Errorf("bench: PostgreSQL version: %w", err)
	}

	// Redis: a fresh key prefix, deleted at the end.
	opt, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("bench: Redis URL: %w", err)
	}
	opt.PoolSize = max(opt.PoolSize, 48)
	e.rdb = redis.NewClient(opt)
	e.redisURL = cfg.RedisURL
	e.prefix = randomName("eskit_bench_") + ":"
	b.closers = append(b.closers, func(ctx context.Context) error {
		err := deletePrefix(ctx, e.rdb, e.prefix)
		return errors.Join(err, e.rdb.Close())
	})
	info, err := e.rdb.Info(ctx, "server").Result()
	if err != nil {
		return nil, fmt.Errorf("bench: cannot reach Redis at %s: %w", opt.Addr, err)
	}
	b.versions.Redis = infoField(info, "redis_version")

	// NATS: the given server, or a local nats-server process (never one
	// in the bench's own process, whose CPU and memory would count as the
	// measured sides').
	natsURL := cfg.NATSURL
	if natsURL == "" {
		srv, err := startLocalNATS(ctx)
		if err != nil {
			return nil, err
		}
		b.closers = append(b.closers, func(context.Context) error { return srv.stop() })
		natsURL = srv.url
		b.versions.NATSLocal = true
	}
	opts := append(outbox.ConnectOptions(), nats.Name("eskit bench"), nats.Timeout(5*time.Second))
	if e.nc, err = nats.Connect(natsURL, opts...); err != nil {
		return nil, fmt.Errorf("bench: cannot reach NATS at %s: %w", natsURL, err)
	}
	if e.js, err = jetstream.New(e.nc); err != nil {
		e.nc.Close()
		return nil, fmt.Errorf("bench: NATS JetStream: %w", err)
	}
	e.subjects = randomName("eskitbench")
	b.closers = append(b.closers, func(ctx context.Context) error {
		var errs []error
		for _, s := range e.streams {
			if err := e.js.DeleteStream(ctx, s); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
				errs = append(errs, fmt.Errorf("delete stream %s: %w", s, err))
			}
		}
		e.nc.Close()
		return errors.Join(errs...)
	})
	b.versions.NATS = e.nc.ConnectedServerVersion()

	// The cases' own clean-ups run first: the cluster's keys, then the
	// cluster itself.
	b.closers = append(b.closers, func(ctx context.Context) error {
		var errs []error
		for i := len(e.later) - 1; i >= 0; i-- {
			errs = append(errs, e.later[i](ctx))
		}
		e.later = nil
		return errors.Join(errs...)
	})
	if slices.ContainsFunc(selected, func(c caseDef) bool { return c.cluster }) {
		if b.versions.RedisCluster, err = e.openCluster(ctx, cfg.RedisClusterURL); err != nil {
			return nil, err
		}
	}
	b.versions.Go = runtime.Version()
	b.versions.CPUs = runtime.GOMAXPROCS(0)
	b.versions.Memory = "heap: peak Go heap in use (runtime/metrics objects+unused = MemStats.HeapInuse) sampled every 5ms per side"
	if e.mem.RSSMeasured() {
		b.versions.Memory += "; rss: peak VmHWM per side, reset via /proc/self/clear_refs when each side starts"
	}
	return b, nil
}

func selectCases(names []string) ([]caseDef, error) {
	all := cases()
	if len(names) == 0 {
		return all, nil
	}
	var out []caseDef
	for _, c := range all {
		if slices.Contains(names, c.name) {
			out = append(out, c)
		}
	}
	for _, n := range names {
		if !slices.Contains(CaseNames(), n) {
			return nil, fmt.Errorf("bench: unknown case %q (known: %s)", n, strings.Join(CaseNames(), ", "))
		}
	}
	return out, nil
}

// createDatabase creates the run's database and registers its removal.
func (b *Bench) createDatabase(ctx context.Context, adminURL string) (string, error) {
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", fmt.Errorf("bench: cannot reach PostgreSQL: %w", err)
	}
	defer admin.Close(ctx)
	name := randomName("eskit_bench_")
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("bench: create database: %w", err)
	}
	b.closers = append(b.closers, func(ctx context.Context) error {
		c, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			return fmt.Errorf("drop database %s: %w", name, err)
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("drop database %s: %w", name, err)
		}
		return nil
	})
	u, err := url.Parse(adminURL)
	if err != nil {
		return "", fmt.Errorf("bench: PostgreSQL URL: %w", err)
	}
	u.Path = "/" + name
	return u.String(), nil
}

// infoField returns a field of Redis's INFO output.
func infoField(info, field string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}

// deletePrefix deletes every key that starts with prefix.
func deletePrefix(ctx context.Context, c *redis.Client, prefix string) error {
	if prefix == "" || strings.ContainsAny(prefix, "*?[\\") {
		return fmt.Errorf("bench: refusing to delete keys matching %q", prefix)
	}
	it := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var batch []string
	for it.Next(ctx) {
		batch = append(batch, it.Val())
		if len(batch) == 1000 {
			if err := c.Unlink(ctx, batch...).Err(); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	if err := it.Err(); err != nil {
		return err
	}
	if len(batch) > 0 {
		return c.Unlink(ctx, batch...).Err()
	}
	return nil
}

// Versions returns the versions of the services.
func (b *Bench) Versions() Versions { return b.versions }

// Run runs the selected cases in order and hands each result to emit as
// soon as its case ends. It stops at the first failing case.
func (b *Bench) Run(ctx context.Context, emit func(Result) error) error {
	e := b.env
	progress := func(done int, running string) {
		if b.progress != nil {
			b.progress(done, len(b.cases), running)
		}
	}
	for i, c := range b.cases {
		if err := ctx.Err(); err != nil {
			return err
		}
		progress(i, c.name)
		e.log.Info("bench case starting", "case", c.name)
		runtime.GC()
		e.mem.reset()
		start := time.Now()
		results, err := c.run(ctx, e)
		if err != nil {
			return fmt.Errorf("bench %s: %w", c.name, err)
		}
		mem := e.mem.peaks()
		e.log.Info("bench case done", "case", c.name, "took", time.Since(start).Round(time.Millisecond))
		for _, r := range results {
			if _, ok := r.Params["peak_memory"]; !ok {
				r.Params["peak_memory"] = mem
			}
			if r.target != nil {
				r.Params["target_met"] = r.target.met(r)
			}
			if err := emit(r); err != nil {
				return err
			}
		}
	}
	progress(len(b.cases), "")
	return nil
}

// Close removes the run's database, Redis keys and JetStream streams and
// closes the connections.
func (b *Bench) Close(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var errs []error
	for i := len(b.closers) - 1; i >= 0; i-- {
		if err := b.closers[i](ctx); err != nil {
			errs = append(errs, err)
		}
	}
	b.closers = nil
	if len(errs) > 0 {
		return fmt.Errorf("bench: clean up: %w", errors.Join(errs...))
	}
	return nil
}

// newStore returns a store on a fresh schema of the run's database, with a
// table "plain" of the events table's shape and indexes for the baselines.
func (e *env) newStore(ctx context.Context, schema string, opts ...pgstore.Option) (*pgstore.Store, error) {
	opts = append([]pgstore.Option{pgstore.WithSchema(schema), pgstore.WithAutoMigrate()}, opts...)
	s, err := pgstore.New(ctx, e.pool, opts...)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", schema, err)
	}
	if _, err := e.pool.Exec(ctx, fmt.Sprintf("CREATE TABLE %s.plain (LIKE %[1]s.events INCLUDING ALL)", schema)); err != nil {
		s.Close()
		return nil, fmt.Errorf("plain table: %w", err)
	}
	return s, nil
}

// ensureStream creates a JetStream stream for the subject prefix
// <run>_<name> and registers its removal.
func (e *env) ensureStream(ctx context.Context, name string) (prefix, stream string, err error) {
	prefix = e.subjects + "_" + name
	s, err := outbox.EnsureStream(ctx, e.js, outbox.StreamConfig{Prefix: prefix})
	if err != nil {
		return "", "", err
	}
	stream = s.CachedInfo().Config.Name
	e.streams = append(e.streams, stream)
	return prefix, stream, nil
}
