package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/eskit/eskit/cmd/eskit/internal/progress"

	"github.com/eskit/eskit/cmd/eskit/internal/bench"
)

// init turns the process into a runner process of the bench's
// project-partitioned case when the bench started it as one (the bench
// re-executes this binary for its runner processes); otherwise it does
// nothing.
func init() { bench.RunChildIfRequested() }

// benchEnvLine is the first JSON line of `eskit bench -json`: the versions
// of the services, in the shape of the result lines.
type benchEnvLine struct {
	Name     string         `json:"name"`
	Unit     string         `json:"unit"`
	Eskit    *float64       `json:"eskit"`
	Baseline *float64       `json:"baseline"`
	Ratio    *float64       `json:"ratio"`
	Params   bench.Versions `json:"params"`
}

// The local servers the bench uses when neither flag nor environment names
// one (those `make services` starts). Unlike the operator commands, the
// bench may fall back to them: it writes only to a database and a key
// prefix of its own, which it removes. It says so on stderr.
const (
	benchPostgresURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	benchRedisURL    = "redis://127.0.0.1:6379/0"
)

// benchURL is a service URL of the bench: the flag, the environment, or
// the local default, which it names on stderr.
func benchURL(c *cli, what, flagValue, flagName, env, def string) string {
	if u, err := serviceURL(what, flagValue, flagName, env); err == nil {
		return u
	}
	fmt.Fprintf(c.stderr, "eskit bench: neither -%s nor %s is set: using the local %s at %s\n", flagName, env, what, def)
	return def
}

func runBench(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("bench", "[flags]")
	def := bench.DefaultSizes()
	pgURL := fs.String("postgres-url", "",
		"PostgreSQL server URL; the bench creates and drops its own database there (default $"+envPostgresURL+", else "+benchPostgresURL+", said on stderr)")
	natsURL := fs.String("nats-url", "", "NATS server URL (default $"+envNATSURL+"); empty starts a local nats-server process for the run")
	redisURL := fs.String("redis-url", "", "Redis URL; the bench uses its own key prefix (default $"+envRedisURL+", else "+benchRedisURL+", said on stderr)")
	clusterURL := fs.String("redis-cluster-url", envOr("ESKIT_BENCH_REDIS_CLUSTER_URL", ""),
		"Redis Cluster of the cluster cases (redis+cluster://host1:port1,host2:port2,...); empty starts a throwaway local one with redis-server and redis-cli (env ESKIT_BENCH_REDIS_CLUSTER_URL)")
	casesFlag := fs.String("cases", "", "comma-separated cases to run (default all: "+strings.Join(bench.CaseNames(), ",")+")")
	asJSON := fs.Bool("json", false, "print one JSON object per line instead of a table")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run (eskit and baseline sides, this process only) to this file, for go tool pprof")
	s := def
	fs.IntVar(&s.Rounds, "rounds", def.Rounds, "alternating eskit/baseline rounds per throughput case")
	conc := fs.String("append-concurrency", joinInts(def.AppendConcurrency), "append-1: comma-separated client counts")
	fs.IntVar(&s.Append1, "append-n", def.Append1, "append-1: commands per side with one client")
	fs.IntVar(&s.Append1Parallel, "append-n-parallel", def.Append1Parallel, "append-1: commands per side with several clients")
	fs.IntVar(&s.Append100, "append100-n", def.Append100, "append-100: 100-event appends per side")
	fs.IntVar(&s.Import, "import-n", def.Import, "import: events per side")
	fs.IntVar(&s.ImportBatch, "import-batch", def.ImportBatch, "import: events per Import call (one COPY)")
	fs.IntVar(&s.LoadEvents, "load-events", def.LoadEvents, "load: events in the loaded stream")
	fs.IntVar(&s.LoadSnapshotEvery, "load-snapshot-every", def.LoadSnapshotEvery, "load: snapshot interval of the snapshotted load")
	fs.IntVar(&s.Loads, "load-n", def.Loads, "load: loads per side without a snapshot (ten times as many with one)")
	fs.IntVar(&s.Feed, "feed-n", def.Feed, "feed: events in the feed")
	fs.IntVar(&s.FeedPage, "feed-page", def.FeedPage, "feed: records per page")
	fs.IntVar(&s.Relay, "relay-n", def.Relay, "relay: events relayed")
	fs.IntVar(&s.Project, "project-n", def.Project, "project-live, project-rebuild: events projected")
	fs.IntVar(&s.ProjectCluster, "project-cluster-n", def.ProjectCluster, "project-live-cluster, project-rebuild-cluster: events projected")
	fs.IntVar(&s.Partitioned, "partitioned-n", def.Partitioned, "project-partitioned: events caught up")
	fs.IntVar(&s.PartitionedRunners, "partitioned-runners", def.PartitionedRunners, "project-partitioned: runner processes of the scaled-out variant (at least 2)")
	fs.IntVar(&s.PartitionedConcurrency, "partitioned-concurrency", def.PartitionedConcurrency,
		"project-partitioned: each runner process's projection.WithConcurrency, and its slow-service calls in flight")
	fs.DurationVar(&s.PartitionedApply, "partitioned-apply", def.PartitionedApply, "project-partitioned: what one apply costs (a wait modelling a slow service)")
	fs.IntVar(&s.E2ERate, "e2e-rate", def.E2ERate, "e2e-latency: appends per second")
	fs.DurationVar(&s.E2EDuration, "e2e-duration", def.E2EDuration, "e2e-latency: how long to append")
	fs.IntVar(&s.HTTP, "http-n", def.HTTP, "http-deposit: requests per side")
	fs.IntVar(&s.HTTPClients, "http-clients", def.HTTPClients, "http-deposit: concurrent HTTP clients")
	if err := noArgs(fs, args); err != nil {
		return err
	}
	var err error
	if s.AppendConcurrency, err = parseInts(*conc); err != nil {
		return usagef("-append-concurrency: %v", err)
	}
	if s.PartitionedRunners < 2 {
		return usagef("-partitioned-runners: want at least 2, got %d", s.PartitionedRunners)
	}
	var cases []string
	for name := range strings.SplitSeq(*casesFlag, ",") {
		if name = strings.TrimSpace(name); name != "" {
			cases = append(cases, name)
		}
	}
	for _, name := range cases {
		if !slices.Contains(bench.CaseNames(), name) {
			return usagef("unknown case %q (known: %s)", name, strings.Join(bench.CaseNames(), ", "))
		}
	}

	log := slog.New(slog.NewTextHandler(c.stderr, nil))
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("bench: cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("bench: cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	*pgURL = benchURL(c, "PostgreSQL", *pgURL, "postgres-url", envPostgresURL, benchPostgresURL)
	*redisURL = benchURL(c, "Redis", *redisURL, "redis-url", envRedisURL, benchRedisURL)
	if *natsURL == "" {
		*natsURL = os.Getenv(envNATSURL)
	}
	// Progress over the cases goes to stderr: a bar redrawn in place on a
	// terminal (the cases' own log lines then only for warnings), plain
	// lines elsewhere.
	bar := progress.NewPrinter(c.stderr)
	if progress.IsTerminal(c.stderr) {
		log = slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	began := time.Now()
	b, err := bench.Open(ctx, bench.Config{
		PostgresURL: *pgURL, NATSURL: *natsURL, RedisURL: *redisURL, RedisClusterURL: *clusterURL,
		Cases: cases, Sizes: s, Logger: log,
		Progress: func(done, total int, running string) {
			note := fmt.Sprintf(", %s elapsed", time.Since(began).Round(time.Second))
			if running != "" {
				note += ", running " + running
			}
			bar.Update(progress.Line{Label: "bench", Done: int64(done), Total: int64(total), Unit: "cases", NoRate: true, Note: note})
			if running == "" {
				bar.Done()
			}
		},
	})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := b.Close(context.WithoutCancel(ctx)); cerr != nil {
			log.Error("bench clean-up failed", "err", cerr)
		}
	}()
	v := b.Versions()
	nats := v.NATS
	if v.NATSLocal {
		nats += " (local process)"
	}
	if *asJSON {
		if err := jsonLine(c.stdout, benchEnvLine{Name: "environment", Params: v}); err != nil {
			return err
		}
	} else {
		log.Info("bench environment", "postgres", v.Postgres, "nats", nats, "redis", v.Redis, "redis_cluster", v.RedisCluster, "go", v.Go, "cpus", v.CPUs)
	}
	var results []bench.Result
	err = b.Run(ctx, func(r bench.Result) error {
		if *asJSON {
			return jsonLine(c.stdout, r)
		}
		results = append(results, r)
		return nil
	})
	if !*asJSON && len(results) > 0 {
		redisDesc := v.Redis
		if v.RedisCluster != "" {
			redisDesc += ", Redis Cluster " + v.RedisCluster
		}
		fmt.Fprintf(c.stdout, "PostgreSQL %s, NATS %s, Redis %s, %s, GOMAXPROCS %d\n", v.Postgres, nats, redisDesc, v.Go, v.CPUs)
		fmt.Fprintf(c.stdout, "memory: %s\n\n", v.Memory)
		if terr := printBenchTable(c, results); terr != nil && err == nil {
			err = terr
		}
	}
	return err
}

// printBenchTable prints the results as a table and lists missed targets.
func printBenchTable(c *cli, results []bench.Result) error {
	t := newTable(c.stdout, "CASE", "VARIANT", "UNIT", "ESKIT", "BASELINE", "RATIO", "TARGET", "HEAP MiB (E/B)", "RSS MiB (E/B)")
	var missed []string
	for _, r := range results {
		base, ratio := "-", "-"
		if r.Baseline != nil {
			base = fmtNum(*r.Baseline)
		}
		if r.Ratio != nil {
			ratio = fmt.Sprintf("%.2f", *r.Ratio)
		}
		tgt, met := r.Target()
		switch {
		case tgt == "":
			tgt = "-"
		case met:
			tgt += " ok"
		default:
			tgt += " MISSED"
			missed = append(missed, strings.TrimSpace(r.Name+" "+r.Variant()))
		}
		heap, rss := "-", "-"
		if m, ok := r.Memory(); ok {
			heap = fmt.Sprintf("%s/%s", mib(m.HeapEskit), mib(m.HeapBase))
			if m.RSSEskit > 0 || m.RSSBase > 0 {
				rss = fmt.Sprintf("%s/%s", mib(m.RSSEskit), mib(m.RSSBase))
			}
		}
		variant := r.Variant()
		if variant == "" {
			variant = "-"
		}
		t.row(r.Name, variant, r.Unit, fmtNum(r.Eskit), base, ratio, tgt, heap, rss)
	}
	if err := t.flush(); err != nil {
		return err
	}
	if len(missed) > 0 {
		fmt.Fprintf(c.stdout, "\nmissed targets: %s\n", strings.Join(missed, "; "))
	}
	return nil
}

func mib(b uint64) string {
	if b == 0 {
		return "-"
	}
	return strconv.FormatUint((b+1<<19)>>20, 10)
}

// fmtNum prints a figure with three significant digits, or as an integer
// when it is large.
func fmtNum(v float64) string {
	switch {
	case v >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

func joinInts(xs []int) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.Itoa(x)
	}
	return strings.Join(parts, ",")
}

func parseInts(s string) ([]int, error) {
	var out []int
	for part := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive integer", part)
		}
		out = append(out, n)
	}
	return out, nil
}
