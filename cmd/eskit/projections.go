package main

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/projection"
)

// redisFlags are the flags of every command that talks to Redis.
type redisFlags struct {
	url    string
	prefix string
}

func (r *redisFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&r.url, "redis-url", envOr("ESKIT_REDIS_URL", "redis://127.0.0.1:6379/0"), "Redis URL (env ESKIT_REDIS_URL)")
	fs.StringVar(&r.prefix, "prefix", envOr("ESKIT_REDIS_PREFIX", ""), "key prefix the projection runners use (env ESKIT_REDIS_PREFIX)")
}

func (r *redisFlags) client(ctx context.Context) (*redis.Client, error) {
	opt, err := redis.ParseURL(r.url)
	if err != nil {
		return nil, &usageError{msg: fmt.Sprintf("bad Redis URL: %v", err)}
	}
	c := redis.NewClient(opt)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.Ping(pctx).Err(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("cannot reach Redis at %s: %w", opt.Addr, err)
	}
	return c, nil
}

const projectionsUsage = `Usage:
  eskit projections status [name...] [flags]
  eskit projections rebuild <name> [flags]
  eskit projections parked list <name> [flags]
  eskit projections parked retry <name> [-stream id]... [flags]
  eskit projections parked skip <name> [-id event-id]... [flags]`

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
		return projectionsRequest(ctx, c, "rebuild", projection.OpRebuild, args[1:])
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
	rdb    *redis.Client
	reader *projection.Reader
	close  func()
}

func openProjections(ctx context.Context, rf *redisFlags, pg *pgFlags, withStore bool) (*projectionsEnv, error) {
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

// knownProjection fails with a clear error for a name no runner serves.
func knownProjection(ctx context.Context, r *projection.Reader, name string) error {
	names, err := r.Projections(ctx)
	if err != nil {
		return err
	}
	if !slices.Contains(names, name) {
		if len(names) == 0 {
			return fmt.Errorf("unknown projection %q: no projection has run under this Redis prefix", name)
		}
		slices.Sort(names)
		return fmt.Errorf("unknown projection %q (known: %s)", name, strings.Join(names, ", "))
	}
	return nil
}

func projectionsStatus(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("projections status", "[name...] [flags]")
	var rf redisFlags
	var pg pgFlags
	rf.register(fs)
	pg.register(fs)
	noStore := fs.Bool("no-store", false, "do not read the event store's head (lag is then unknown)")
	asJSON := fs.Bool("json", false, "print JSON lines")
	names, rest := splitArgs(args)
	if err := parse(fs, rest); err != nil {
		return err
	}
	names = append(names, fs.Args()...)
	env, err := openProjections(ctx, &rf, &pg, !*noStore)
	if err != nil {
		return err
	}
	defer env.close()
	if len(names) == 0 {
		if names, err = env.reader.Projections(ctx); err != nil {
			return err
		}
		slices.Sort(names)
	}
	var t *table
	if !*asJSON {
		t = newTable(c.stdout, "NAME", "VERSION", "CHECKPOINT", "HEAD", "LAG EVENTS", "LAG", "PARKED", "REBUILDING", "OWNER", "LAST ERROR")
	}
	for _, name := range names {
		if err := knownProjection(ctx, env.reader, name); err != nil {
			return err
		}
		st, err := env.reader.Status(ctx, name)
		if err != nil {
			return err
		}
		if *asJSON {
			if err := jsonLine(c.stdout, map[string]any{
				"name": st.Name, "version": st.Version, "checkpoint": st.Checkpoint.String(), "head": st.Head.String(),
				"lag_events": st.LagEvents, "lag_seconds": st.Lag.Seconds(), "parked": st.Parked, "rebuilding": st.Rebuilding,
				"owner": st.Owner, "last_error": st.LastError, "last_recorded_at": st.LastRecordedAt,
			}); err != nil {
				return err
			}
			continue
		}
		lagEvents := "?"
		if st.LagEvents >= 0 {
			lagEvents = fmt.Sprint(st.LagEvents)
		}
		t.row(st.Name, st.Version, st.Checkpoint, st.Head, lagEvents, st.Lag.Round(time.Millisecond), st.Parked, st.Rebuilding, st.Owner, st.LastError)
	}
	if t != nil {
		return t.flush()
	}
	return nil
}

// splitArgs separates leading positional arguments from the flags after them.
func splitArgs(args []string) (pos, rest []string) {
	for i, a := range args {
		if strings.HasPrefix(a, "-") {
			return pos, args[i:]
		}
		pos = append(pos, a)
	}
	return pos, nil
}

func projectionsParked(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("projections parked list", "<name> [flags]")
	var rf redisFlags
	rf.register(fs)
	asJSON := fs.Bool("json", false, "print JSON lines")
	pos, rest := splitArgs(args)
	if err := parse(fs, rest); err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want one projection name")
	}
	env, err := openProjections(ctx, &rf, nil, false)
	if err != nil {
		return err
	}
	defer env.close()
	if err := knownProjection(ctx, env.reader, pos[0]); err != nil {
		return err
	}
	parked, err := env.reader.Parked(ctx, pos[0])
	if err != nil {
		return err
	}
	var t *table
	if !*asJSON {
		t = newTable(c.stdout, "EVENT ID", "STREAM", "VERSION", "POSITION", "TYPE", "ATTEMPTS", "PARKED AT", "BLOCKED BY", "ERROR")
	}
	for _, p := range parked {
		if *asJSON {
			m := recordJSON(p.Record)
			m["error"], m["attempts"], m["parked_at"] = p.Error, p.Attempts, p.ParkedAt
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
		t.row(p.Record.ID, p.Record.StreamID, p.Record.Version, p.Record.Position, p.Record.Type, p.Attempts,
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

func projectionsRequest(ctx context.Context, c *cli, name, op string, args []string) error {
	fs := c.flagSet("projections "+name, "<name> [flags]")
	var rf redisFlags
	rf.register(fs)
	timeout := fs.Duration("timeout", 10*time.Minute, "how long to wait for the active runner")
	asJSON := fs.Bool("json", false, "print JSON")
	var streams, ids stringList
	if op == projection.OpRetry {
		fs.Var(&streams, "stream", "retry only this stream's parked records (repeatable; default all)")
	}
	if op == projection.OpSkip {
		fs.Var(&ids, "id", "skip only this parked event ID (repeatable; default all)")
	}
	pos, rest := splitArgs(args)
	if err := parse(fs, rest); err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want one projection name")
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
	if err := knownProjection(ctx, env.reader, pos[0]); err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	start := time.Now()
	reply, err := env.reader.Request(rctx, pos[0], req)
	if err != nil {
		return err
	}
	if *asJSON {
		return jsonLine(c.stdout, reply)
	}
	switch op {
	case projection.OpRebuild:
		fmt.Fprintf(c.stdout, "projection %s rebuilt: now serving v%d (%s)\n", pos[0], reply.Version, time.Since(start).Round(time.Millisecond))
	case projection.OpRetry:
		fmt.Fprintf(c.stdout, "projection %s: %d parked record(s) applied, %d still parked\n", pos[0], reply.Applied, reply.Remaining)
	case projection.OpSkip:
		fmt.Fprintf(c.stdout, "projection %s: %d parked record(s) skipped\n", pos[0], reply.Skipped)
	}
	return nil
}
