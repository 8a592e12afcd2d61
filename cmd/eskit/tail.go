package main

import (
	"context"
	"errors"
	"time"

	"github.com/eskit/eskit/eventstore"
)

func runTail(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("tail", "[flags]")
	var pg pgFlags
	pg.register(fs)
	from := fs.String("from", "", "start after this Position (default: the current head; \"0-0\" for the beginning)")
	limit := fs.Int("limit", 0, "stop after this many events (0: follow until interrupted)")
	asJSON := fs.Bool("json", false, "print JSON lines")
	if err := parse(fs, args); err != nil {
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
		} else {
			t := newTable(c.stdout)
			t.row(rec.Position, rec.RecordedAt.Format(time.RFC3339Nano), rec.StreamID, rec.Version, rec.Type, compactData(rec))
			if err := t.flush(); err != nil {
				return err
			}
		}
		n++
		if *limit > 0 && n >= *limit {
			return nil
		}
	}
	return nil
}
