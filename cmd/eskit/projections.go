package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/cmd/eskit/internal/progress"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/internal/infra/redisconn"
	"github.com/eskit/eskit/projection"
)

// redisFlags are the flags of every command that talks to the read
// models: where they are (-readmodels: Redis, or PostgreSQL through pg),
// and the runners' key prefix.
type redisFlags struct {
	url        string
	prefix     string
	readmodels string
	// pg is the command's PostgreSQL flags, for -readmodels postgres.
	pg *pgFlags
}

// Read-model targets (-readmodels).
const (
	readModelsRedis    = "redis"
	readModelsPostgres = "postgres"
)

func (r *redisFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&r.readmodels, "readmodels", envOr("ESKIT_READMODELS", readModelsRedis),
		"where the read models are: redis, or postgres (the projection tables of -schema in -postgres-url's database; env ESKIT_READMODELS)")
	fs.StringVar(&r.url, "redis-url", "",
		"Redis URL (default $"+envRedisURL+"; one of them is required); a cluster as redis+cluster://host1:port1,host2:port2 or redis://host1:port1?addr=host2:port2")
	fs.StringVar(&r.prefix, "prefix", envOr("ESKIT_REDIS_PREFIX", ""),
		"key prefix the projection runners use, with or without its ':' (bank, bank:; env ESKIT_REDIS_PREFIX)")
}

func (r *redisFlags) client(ctx context.Context) (redis.UniversalClient, error) {
	url, err := serviceURL("Redis", r.url, "redis-url", envRedisURL)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := redisconn.Open(pctx, url, redisconn.WithPing())
	var ue *redisconn.URLError
	switch {
	case errors.As(err, &ue):
		return nil, &usageError{msg: fmt.Sprintf("bad Redis URL: %v", err)}
	case err != nil:
		return nil, fmt.Errorf("cannot reach Redis: %w", err)
	}
	return c, nil
}

const projectionsUsage = `Usage:
  eskit projections status [name...] [flags]
  eskit projections rebuild <name> [-progress 1s] [-json] [flags]
  eskit projections parked list <name> [flags]
  eskit projections parked retry <name> [-stream id]... [flags]
  eskit projections parked skip <name> [-id event-id]... [flags]
Flags may come before or after the names; ` + "`--`" + ` ends them.`

func runProjections(ctx context.Context, c *cli, args []string) error {
	if len(args) == 0 {
		return usagef("want a subcommand\n%s", projectionsUsage)
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprintln(c.stderr, projectionsUsage)
		return nil
	case "status":
		return projectionsStatus(ctx, c, args[1:])
	case "rebuild":
		return projectionsRebuild(ctx, c, args[1:])
	case "parked":
		if len(args) < 2 {
			return usagef("want `parked list|retry|skip <name>`")
		}
		switch args[1] {
		case "list":
			return projectionsParked(ctx, c, args[2:])
		case "retry":
			return projectionsRequest(ctx, c, "parked retry", projection.OpRetry, args[2:])
		case "skip":
			return projectionsRequest(ctx, c, "parked skip", projection.OpSkip, args[2:])
		}
		return usagef("unknown parked subcommand %q (want list, retry or skip)", args[1])
	}
	return usagef("unknown projections subcommand %q\n%s", args[0], projectionsUsage)
}

// projectionsEnv opens what the projection commands need: Redis, and the
// event store when a PostgreSQL URL is reachable (for head and lag).
type projectionsEnv struct {
	rdb    redis.UniversalClient // nil with PostgreSQL read models
	reader *projection.Reader
	close  func()
}

func openProjections(ctx context.Context, rf *redisFlags, pg *pgFlags, withStore bool) (*projectionsEnv, error) {
	switch rf.readmodels {
	case readModelsRedis:
	case readModelsPostgres:
		return openPostgresProjections(ctx, rf, withStore)
	default:
		return nil, usagef("-readmodels %q: want redis or postgres", rf.readmodels)
	}
	rdb, err := rf.client(ctx)
	if err != nil {
		return nil, err
	}
	env := &projectionsEnv{rdb: rdb, close: func() { _ = rdb.Close() }}
	var feed eventstore.FeedReader
	if withStore {
		store, pool, err := pg.store(ctx)
		if err != nil {
			env.close()
			return nil, err
		}
		feed = store
		prev := env.close
		env.close = func() { store.Close(); pool.Close(); prev() }
	}
	env.reader = projection.NewReader(rdb, rf.prefix, feed)
	return env, nil
}

// openPostgresProjections opens the read models kept in PostgreSQL: the
// projection tables of the schema, and the store's feed when asked.
func openPostgresProjections(ctx context.Context, rf *redisFlags, withStore bool) (*projectionsEnv, error) {
	if rf.pg == nil {
		return nil, usagef("-readmodels postgres needs -postgres-url")
	}
	store, pool, err := rf.pg.store(ctx)
	if err != nil {
		return nil, err
	}
	var feed eventstore.FeedReader
	if withStore {
		feed = store
	}
	reader, err := projection.NewReaderOn(projection.Postgres(pool, rf.pg.schema), rf.prefix, feed)
	if err != nil {
		store.Close()
		pool.Close()
		return nil, err
	}
	return &projectionsEnv{reader: reader, close: func() { store.Close(); pool.Close() }}, nil
}

// registered returns the projections registered under the reader's prefix.
// When there is none it fails with noProjectionsError, which lists the
// prefixes that do have projections in this Redis.
func registered(ctx context.Context, env *projectionsEnv, prefix string) ([]string, error) {
	names, err := env.reader.Projections(ctx)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		if env.rdb == nil {
			return nil, fmt.Errorf("no projection is registered under prefix %q in these PostgreSQL read models (set it with -prefix or ESKIT_REDIS_PREFIX; has a projection runner run against them?)", prefix)
		}
		return nil, noProjectionsError(ctx, env.rdb, prefix)
	}
	return names, nil
}

// noProjectionsError says that nothing is registered under prefix and
// lists the prefixes under which projections are registered.
func noProjectionsError(ctx context.Context, rdb redis.UniversalClient, prefix string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "no projection is registered under Redis prefix %q (set it with -prefix or ESKIT_REDIS_PREFIX)", prefix)
	prefixes, err := projection.Prefixes(ctx, rdb)
	switch {
	case err != nil:
		fmt.Fprintf(&b, "; cannot list the prefixes that have projections: %v", err)
	case len(prefixes) == 0:
		b.WriteString(", nor under any other prefix of this Redis: has a projection runner run against it?")
	default:
		b.WriteString("; prefixes with projections in this Redis:")
		for _, p := range prefixes {
			fmt.Fprintf(&b, "\n  %q", p)
		}
	}
	return errors.New(b.String())
}

// knownProjection fails with a clear error for a name that is not
// registered under the prefix.
func knownProjection(ctx context.Context, env *projectionsEnv, prefix, name string) error {
	names, err := registered(ctx, env, prefix)
	if err != nil {
		return fmt.Errorf("unknown projection %q: %w", name, err)
	}
	return checkKnown(names, name)
}

func checkKnown(names []string, name string) error {
	if !slices.Contains(names, name) {
		return fmt.Errorf("unknown projection %q (known: %s)", name, strings.Join(names, ", "))
	}
	return nil
}

// noRunnerHint adds what to do to an error saying no runner holds a
// projection.
func noRunnerHint(err error, prefix string) error {
	if errors.Is(err, projection.ErrNoActiveRunner) {
		return fmt.Errorf("%w (start a runner of the projection with Redis prefix %q, then try again; "+
			"`eskit projections status` shows each partition's owner)", err, prefix)
	}
	return err
}

func projectionsStatus(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("projections status", "[name...] [flags]")
	var rf redisFlags
	var pg pgFlags
	rf.register(fs)
	pg.register(fs)
	rf.pg = &pg
	noStore := fs.Bool("no-store", false, "do not read the event store's head (lag is then unknown)")
	asJSON := fs.Bool("json", false, "print JSON lines, one per projection")
	names, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := pg.checkStoreURL(*noStore); err != nil {
		return err
	}
	env, err := openProjections(ctx, &rf, &pg, !*noStore)
	if err != nil {
		return err
	}
	defer env.close()
	known, err := registered(ctx, env, rf.prefix)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		names = known
	}
	for _, name := range names {
		if err := checkKnown(known, name); err != nil {
			return err
		}
	}
	sts := make([]projection.Status, 0, len(names))
	for _, name := range names {
		st, err := env.reader.Status(ctx, name)
		if err != nil {
			return err
		}
		sts = append(sts, st)
	}
	if *asJSON {
		for _, st := range sts {
			if err := jsonLine(c.stdout, statusJSON(st)); err != nil {
				return err
			}
		}
		return nil
	}
	t := newTable(c.stdout, "NAME", "READY", "VERSION", "PARTITIONS", "CHECKPOINT", "HEAD", "LAG EVENTS", "LAG",
		"PARKED", "REBUILDING", "OWNERS", "LAST ERROR AT", "LAST ERROR")
	for _, st := range sts {
		errAt := "-"
		if !st.LastErrorAt.IsZero() {
			errAt = st.LastErrorAt.Format(time.RFC3339)
		}
		lastErr := st.LastError
		if lastErr == "" {
			lastErr = "-"
		}
		t.row(st.Name, readiness(st), st.Version, st.Partitions, st.Checkpoint, st.Head, count(st.LagEvents),
			st.Lag.Round(time.Millisecond), st.Parked, rebuilding(st), owners(st), errAt, lastErr)
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(c.stdout)
	t = newTable(c.stdout, "NAME", "PARTITION", "OWNER", "CHECKPOINT", "VERIFIED", "LAG EVENTS", "LAG", "PARKED",
		"BUILDING", "BUILD LAG EVENTS", "LAST APPLIED")
	for _, st := range sts {
		for _, ps := range st.Parts {
			building, buildLag := "-", "-"
			if st.Rebuilding != 0 {
				building = fmt.Sprintf("v%d @%s", st.Rebuilding, ps.Building)
				buildLag = count(ps.BuildLagEvents)
			}
			t.row(st.Name, ps.Partition, dash(ps.Owner), ps.Checkpoint, ps.Verified, count(ps.LagEvents),
				ps.Lag.Round(time.Millisecond), ps.Parked, building, buildLag, timeOrDash(ps.LastRecordedAt))
		}
	}
	return t.flush()
}

// statusJSON is a projection's status for scripts.
func statusJSON(st projection.Status) map[string]any {
	parts := make([]map[string]any, 0, len(st.Parts))
	for _, ps := range st.Parts {
		p := map[string]any{
			"partition": ps.Partition, "owner": ps.Owner, "checkpoint": ps.Checkpoint.String(), "verified": ps.Verified.String(),
			"lag_events": ps.LagEvents, "lag_seconds": ps.Lag.Seconds(), "parked": ps.Parked,
			"last_recorded_at": timeOrNil(ps.LastRecordedAt), "building": nil, "build_lag_events": ps.BuildLagEvents,
		}
		if st.Rebuilding != 0 {
			p["building"] = ps.Building.String()
		}
		parts = append(parts, p)
	}
	m := map[string]any{
		"name": st.Name, "ready": st.Ready, "not_ready": st.NotReady, "version": st.Version, "partitions": st.Partitions,
		"checkpoint": st.Checkpoint.String(), "head": st.Head.String(),
		"lag_events": st.LagEvents, "lag_seconds": st.Lag.Seconds(), "parked": st.Parked, "rebuilding": st.Rebuilding,
		"owner": st.Owner, "last_error": st.LastError, "last_error_at": timeOrNil(st.LastErrorAt),
		"last_recorded_at": timeOrNil(st.LastRecordedAt), "parts": parts,
	}
	if p, ok := st.BuildProgress(); ok && p.Total >= 0 {
		m["build_done"], m["build_total"] = p.Done, p.Total
	}
	return m
}

// readiness is the READY column: yes, or no and why.
func readiness(st projection.Status) string {
	if st.Ready {
		return "yes"
	}
	if st.NotReady == "" {
		return "no"
	}
	return "no: " + st.NotReady
}

// rebuilding is the REBUILDING column: the version built and how far.
func rebuilding(st projection.Status) string {
	p, ok := st.BuildProgress()
	switch {
	case !ok:
		return "-"
	case p.Total < 0:
		return fmt.Sprintf("v%d @%s", p.Version, p.Position)
	}
	return fmt.Sprintf("v%d %d/%d (%s)", p.Version, p.Done, p.Total, progress.Percent(p.Done, p.Total))
}

// owners lists the runners holding the projection's partitions, and how
// many partitions none holds.
func owners(st projection.Status) string {
	var out []string
	free := 0
	for _, ps := range st.Parts {
		switch {
		case ps.Owner == "":
			free++
		case !slices.Contains(out, ps.Owner):
			out = append(out, ps.Owner)
		}
	}
	if free > 0 {
		out = append(out, fmt.Sprintf("(%d of %d partitions unowned)", free, len(st.Parts)))
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, ", ")
}

// count prints an event count, "?" when unknown (negative).
func count(n int64) string {
	if n < 0 {
		return "?"
	}
	return fmt.Sprint(n)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func timeOrDash(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// timeOrNil is t for JSON, null when zero.
func timeOrNil(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC()
}

func projectionsParked(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("projections parked list", "<name> [flags]")
	var rf redisFlags
	var pg pgFlags
	rf.register(fs)
	pg.register(fs)
	rf.pg = &pg
	asJSON := fs.Bool("json", false, "print JSON lines")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want one projection name, got %d", len(pos))
	}
	env, err := openProjections(ctx, &rf, nil, false)
	if err != nil {
		return err
	}
	defer env.close()
	if err := knownProjection(ctx, env, rf.prefix, pos[0]); err != nil {
		return err
	}
	// The partition of each record tells which runner holds it.
	st, err := env.reader.Status(ctx, pos[0])
	if err != nil {
		return err
	}
	parked, err := env.reader.Parked(ctx, pos[0])
	if err != nil {
		return err
	}
	var t *table
	if !*asJSON {
		t = newTable(c.stdout, "EVENT ID", "STREAM", "PARTITION", "VERSION", "POSITION", "TYPE", "ATTEMPTS", "PARKED AT", "BLOCKED BY", "ERROR")
	}
	for _, p := range parked {
		part := eventstore.StreamPartition(p.Record.StreamID, max(st.Partitions, 1))
		if *asJSON {
			m := recordJSON(p.Record)
			m["error"], m["attempts"], m["parked_at"], m["partition"] = p.Error, p.Attempts, p.ParkedAt, part
			if p.BlockedBy != uuid.Nil {
				m["blocked_by"] = p.BlockedBy.String()
			}
			if p.Partial {
				m["partial"] = true
			}
			if err := jsonLine(c.stdout, m); err != nil {
				return err
			}
			continue
		}
		blocked := ""
		if p.BlockedBy != uuid.Nil {
			blocked = p.BlockedBy.String()
		}
		t.row(p.Record.ID, p.Record.StreamID, part, p.Record.Version, p.Record.Position, p.Record.Type, p.Attempts,
			p.ParkedAt.Format(time.RFC3339), blocked, p.Error)
	}
	if t != nil {
		return t.flush()
	}
	return nil
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// projectionsRequest sends a retry or skip to the runners holding the
// partitions concerned (Reader.Request fans it out and sums the replies).
func projectionsRequest(ctx context.Context, c *cli, name, op string, args []string) error {
	fs := c.flagSet("projections "+name, "<name> [flags]")
	var rf redisFlags
	var pg pgFlags
	rf.register(fs)
	pg.register(fs)
	rf.pg = &pg
	timeout := fs.Duration("timeout", 10*time.Minute, "how long to wait for the runners' answers")
	asJSON := fs.Bool("json", false, "print JSON")
	var streams, ids stringList
	if op == projection.OpRetry {
		fs.Var(&streams, "stream", "retry only this stream's parked records (repeatable; default all)")
	}
	if op == projection.OpSkip {
		fs.Var(&ids, "id", "skip only this parked event ID (repeatable; default all)")
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want one projection name, got %d", len(pos))
	}
	req := projection.ControlRequest{Op: op, Streams: streams}
	for _, s := range ids {
		id, err := uuid.Parse(s)
		if err != nil {
			return usagef("bad event ID %q: %v", s, err)
		}
		req.EventIDs = append(req.EventIDs, id)
	}
	env, err := openProjections(ctx, &rf, nil, false)
	if err != nil {
		return err
	}
	defer env.close()
	if err := knownProjection(ctx, env, rf.prefix, pos[0]); err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	reply, err := env.reader.Request(rctx, pos[0], req)
	if err != nil {
		return noRunnerHint(err, rf.prefix)
	}
	if *asJSON {
		return jsonLine(c.stdout, reply)
	}
	switch op {
	case projection.OpRetry:
		fmt.Fprintf(c.stdout, "projection %s: %d parked record(s) applied, %d still parked\n", pos[0], reply.Applied, reply.Remaining)
	case projection.OpSkip:
		fmt.Fprintf(c.stdout, "projection %s: %d parked record(s) skipped\n", pos[0], reply.Skipped)
	}
	return nil
}
