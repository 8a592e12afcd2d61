package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"

	"github.com/eskit/eskit/eventstore"
)

func runTail(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("tail", "[flags]\n\nOne line per record: position, recorded at (UTC), stream ID, version, event type, payload\n(compact JSON). -json prints one JSON object per line instead.")
	var pg pgFlags
	pg.register(fs)
	from := fs.String("from", "", "start after this Position (default: the current head; \"0-0\" for the beginning)")
	limit := fs.Int("limit", 0, "stop after this many events (0: follow until interrupted)")
	asJSON := fs.Bool("json", false, "print JSON lines")
	if err := noArgs(fs, args); err != nil {
		return err
	}
	store, pool, err := pg.store(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	defer store.Close()
	var after eventstore.Position
	if *from == "" {
		if after, err = store.Head(ctx); err != nil {
			return err
		}
	} else if after, err = eventstore.ParsePosition(*from); err != nil {
		return &usageError{msg: err.Error()}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n := 0
	for rec, err := range store.Subscribe(ctx, after) {
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		}
		if *asJSON {
			if err := jsonLine(c.stdout, recordJSON(rec)); err != nil {
				return err
			}
		} else if _, err := fmt.Fprintln(c.stdout, tailLine(rec)); err != nil {
			return err
		}
		n++
		if *limit > 0 && n >= *limit {
			return nil
		}
	}
	return nil
}

// tailLine is a record on one line, its fields two spaces apart: position,
// time (UTC, fixed width), stream ID, version, event type, payload. A
// stream ID, type or payload holding a control character (a line break)
// is printed as a quoted Go string, so that each record stays on its line.
func tailLine(rec eventstore.Record) string {
	return fmt.Sprintf("%s  %s  %s  %d  %s  %s", rec.Position, rec.RecordedAt.UTC().Format(tailTime),
		oneLine(rec.StreamID), rec.Version, oneLine(rec.Type), oneLine(compactData(rec)))
}

// tailTime is RFC 3339 with microseconds, always the same width.
const tailTime = "2006-01-02T15:04:05.000000Z07:00"

// oneLine is s, or s quoted when it holds a control character.
func oneLine(s string) string {
	if strings.ContainsFunc(s, unicode.IsControl) {
		return strconv.Quote(s)
	}
	return s
}
