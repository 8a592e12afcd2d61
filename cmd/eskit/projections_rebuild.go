package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/eskit/eskit/cmd/eskit/internal/progress"
	"github.com/eskit/eskit/projection"
)

// projectionsRebuild asks the projection's runners for a blue/green rebuild
// (Reader.Rebuild, in a goroutine) and, while it runs, prints its progress
// from the projection's status every -progress interval.
func projectionsRebuild(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("projections rebuild", "<name> [flags]")
	var rf redisFlags
	var pg pgFlags
	rf.register(fs)
	pg.register(fs)
	rf.pg = &pg
	noStore := fs.Bool("no-store", false, "do not read the event store's head (progress then shows positions, not records of a total)")
	timeout := fs.Duration("timeout", 10*time.Minute, "how long to wait for the rebuild to switch over (it is called off after that)")
	every := fs.Duration("progress", time.Second, "how often to print progress (0: never)")
	asJSON := fs.Bool("json", false, "print one JSON object when done (progress lines then go to stderr)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want one projection name, got %d", len(pos))
	}
	if *every < 0 {
		return usagef("-progress must not be negative")
	}
	if err := pg.checkStoreURL(*noStore); err != nil {
		return err
	}
	name := pos[0]
	env, err := openProjections(ctx, &rf, nil, false)
	if err != nil {
		return err
	}
	defer env.close()
	if err := knownProjection(ctx, env, rf.prefix, name); err != nil {
		return err
	}
	// The store gives the head, hence "records done of total". Without it
	// the rebuild still runs; its progress is shown as positions.
	if !*noStore {
		store, pool, err := pg.store(ctx)
		var ue *usageError
		switch {
		case errors.As(err, &ue):
			return err
		case err != nil:
			fmt.Fprintf(c.stderr, "eskit projections rebuild: no event store, progress shows positions only: %v\n", err)
		default:
			defer func() { store.Close(); pool.Close() }()
			env.reader = projection.NewReader(env.rdb, rf.prefix, store)
		}
	}
	progressOut := c.stdout
	if *asJSON {
		progressOut = c.stderr
	}

	rctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	type result struct {
		version int64
		err     error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		v, err := env.reader.Rebuild(rctx, name)
		done <- result{v, err}
	}()
	var tick <-chan time.Time
	if *every > 0 {
		t := time.NewTicker(*every)
		defer t.Stop()
		tick = t.C
	}
	var meter progress.Meter
	var last projection.BuildProgress
	bar := progress.NewPrinter(progressOut)
	statusFailed := false
	for {
		select {
		case res := <-done:
			bar.Done()
			if res.err != nil {
				if errors.Is(res.err, context.Canceled) && ctx.Err() != nil {
					fmt.Fprintf(c.stderr, "eskit projections rebuild: interrupted: %v\n", res.err)
				}
				if errors.Is(res.err, context.DeadlineExceeded) && ctx.Err() == nil {
					return fmt.Errorf("%w (-timeout %s passed; the serving version is kept)", res.err, *timeout)
				}
				if errors.Is(res.err, projection.ErrRebuildInProgress) {
					return fmt.Errorf("%w (`eskit projections status %s` shows its progress)", res.err, name)
				}
				return noRunnerHint(res.err, rf.prefix)
			}
			elapsed := time.Since(start)
			if *asJSON {
				out := map[string]any{"name": name, "version": res.version, "elapsed_seconds": elapsed.Seconds()}
				if last.Version == res.version && last.Total >= 0 {
					out["records"] = last.Total
				}
				return jsonLine(c.stdout, out)
			}
			fmt.Fprintf(c.stdout, "projection %s rebuilt: now serving v%d (%s)\n", name, res.version, elapsed.Round(time.Millisecond))
			return nil
		case now := <-tick:
			st, err := env.reader.Status(rctx, name)
			if err != nil {
				if rctx.Err() == nil && !statusFailed {
					fmt.Fprintf(c.stderr, "eskit projections rebuild: cannot read progress: %v\n", err)
					statusFailed = true
				}
				continue
			}
			statusFailed = false
			p, ok := st.BuildProgress()
			if !ok {
				continue // not started yet, or switched already
			}
			last = p
			bar.Update(rebuildLine(name, p, meter.Sample(p.Version, p.Count(), now)))
		}
	}
}

// rebuildLine is the progress line of a rebuild.
func rebuildLine(name string, p projection.BuildProgress, rate float64) progress.Line {
	l := progress.Line{Label: fmt.Sprintf("rebuilding %s v%d", name, p.Version), Done: p.Done, Total: p.Total,
		Unit: "records", Rate: rate}
	if p.Total < 0 {
		l.Done, l.Unit = int64(p.Position.Seq), "records (head unknown: by position "+p.Position.String()+")"
	}
	if p.Partitions > 1 {
		l.Scope = fmt.Sprintf("in the slowest of %d partitions", p.Partitions)
	}
	if p.Total >= 0 && p.Done >= p.Total {
		l.Note += ", caught up: switching once every partition is verified"
	}
	if len(p.Unowned) > 0 {
		l.Note += fmt.Sprintf("; no runner holds partition(s) %v, waiting for one", p.Unowned)
	}
	return l
}
