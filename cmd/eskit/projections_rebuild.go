package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/eskit/eskit/eventstore"
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
	var meter rateMeter
	var last buildProgress
	statusFailed := false
	for {
		select {
		case res := <-done:
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
			p, ok := progressOf(st)
			if !ok {
				continue // not started yet, or switched already
			}
			last = p
			printProgress(progressOut, name, p, meter.sample(p, now))
		}
	}
}

// buildProgress is how far a rebuild has come, from a projection's status:
// the records of the feed its slowest partition has read into the version
// being built, out of the feed's records up to the head.
type buildProgress struct {
	Version int64
	// Done and Total count records; Total is -1 when the head is unknown
	// (then Done is too).
	Done, Total int64
	// Position is the slowest partition's build checkpoint.
	Position eventstore.Position
	// Partitions is the number of partitions; Unowned those no runner
	// holds (their part of the build does not advance).
	Partitions int
	Unowned    []int
}

// progressOf computes the progress of the version being built (first
// build or blue/green rebuild); false when nothing is built.
func progressOf(st projection.Status) (buildProgress, bool) {
	if st.Rebuilding == 0 || len(st.Parts) == 0 {
		return buildProgress{}, false
	}
	p := buildProgress{Version: st.Rebuilding, Done: -1, Total: -1, Partitions: len(st.Parts)}
	// Each partition reads the whole feed (applying its own streams), so
	// each one's progress is measured against the whole feed: the total
	// is the feed's records up to the head, which is how far a partition
	// at the start of the feed trails it (lagEvents of the zero position).
	known := true
	for i, ps := range st.Parts {
		if ps.Owner == "" {
			p.Unowned = append(p.Unowned, ps.Partition)
		}
		if ps.BuildLagEvents < 0 {
			known = false
		}
		if i == 0 || ps.Building.Before(p.Position) {
			p.Position = ps.Building
		}
	}
	if known {
		total := int64(st.Head.Seq)
		p.Total, p.Done = total, total
		for _, ps := range st.Parts {
			p.Done = min(p.Done, max(total-ps.BuildLagEvents, 0))
		}
	}
	return p, true
}

// rateMeter turns successive progress samples into a rate.
type rateMeter struct {
	at      time.Time
	version int64
	done    int64
}

// sample returns the records per second since the previous sample of the
// same version, or -1 for the first one.
func (m *rateMeter) sample(p buildProgress, now time.Time) float64 {
	done := p.Done
	if p.Total < 0 {
		done = int64(p.Position.Seq) // the head is unknown: count by position
	}
	rate := -1.0
	if m.version == p.Version && !m.at.IsZero() && now.After(m.at) {
		rate = max(float64(done-m.done), 0) / now.Sub(m.at).Seconds()
	}
	m.at, m.version, m.done = now, p.Version, done
	return rate
}

// printProgress writes one progress line.
func printProgress(w io.Writer, name string, p buildProgress, rate float64) {
	var b strings.Builder
	fmt.Fprintf(&b, "rebuilding %s v%d: ", name, p.Version)
	if p.Total >= 0 {
		fmt.Fprintf(&b, "%d/%d records (%s)", p.Done, p.Total, percent(p.Done, p.Total))
	} else {
		fmt.Fprintf(&b, "at position %s (head unknown)", p.Position)
	}
	if p.Partitions > 1 {
		fmt.Fprintf(&b, " in the slowest of %d partitions", p.Partitions)
	}
	switch {
	case rate < 0:
		b.WriteString(", measuring rate")
	default:
		fmt.Fprintf(&b, ", %.0f records/s", rate)
		if left := p.Total - p.Done; p.Total >= 0 && left > 0 && rate > 0 {
			if eta := time.Duration(float64(left) / rate * float64(time.Second)); eta < time.Second {
				b.WriteString(", under 1s left")
			} else {
				fmt.Fprintf(&b, ", about %s left", eta.Round(time.Second))
			}
		}
	}
	if p.Total >= 0 && p.Done >= p.Total {
		b.WriteString(", caught up: switching once every partition is verified")
	}
	if len(p.Unowned) > 0 {
		fmt.Fprintf(&b, "; no runner holds partition(s) %v, waiting for one", p.Unowned)
	}
	fmt.Fprintln(w, b.String())
}

// percent formats done/total.
func percent(done, total int64) string {
	if total <= 0 {
		return "100%"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(done)/float64(total))
}
