package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/eskit/eskit/eventstore"
)

func runStreams(ctx context.Context, c *cli, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "list":
			return runStreamsList(ctx, c, args[1:])
		case "show":
			return runStreamsShow(ctx, c, args[1:])
		}
	}
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Fprintln(c.stderr, "Usage: eskit streams list [flags] | eskit streams show <stream-id> [flags]\n(flags may come before or after the stream ID; `--` ends them)")
		return nil
	}
	return usagef("want `streams list` or `streams show <stream-id>`")
}

func runStreamsList(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("streams list", "[flags]")
	var pg pgFlags
	pg.register(fs)
	prefix := fs.String("prefix", "", "only streams whose ID starts with this")
	after := fs.String("after", "", "start after this stream ID (for paging)")
	limit := fs.Int("limit", 100, "most streams to list")
	asJSON := fs.Bool("json", false, "print JSON lines")
	if err := noArgs(fs, args); err != nil {
		return err
	}
	if *limit <= 0 {
		return usagef("-limit must be positive")
	}
	store, pool, err := pg.store(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	defer store.Close()
	streams, err := store.ListStreams(ctx, *prefix, *after, *limit)
	if err != nil {
		return err
	}
	if *asJSON {
		for _, s := range streams {
			if err := jsonLine(c.stdout, map[string]any{"stream_id": s.StreamID, "version": s.Version, "last_recorded_at": s.LastRecordedAt}); err != nil {
				return err
			}
		}
		return nil
	}
	t := newTable(c.stdout, "STREAM", "VERSION", "LAST EVENT AT")
	for _, s := range streams {
		t.row(s.StreamID, s.Version, s.LastRecordedAt.Format(time.RFC3339Nano))
	}
	return t.flush()
}

func runStreamsShow(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("streams show", "<stream-id> [flags]")
	var pg pgFlags
	pg.register(fs)
	from := fs.Int64("from", 1, "first version to show")
	limit := fs.Int("limit", 0, "most events to show (0: all)")
	asJSON := fs.Bool("json", false, "print JSON lines")
	// A stream ID that starts with a dash follows `--`.
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want one stream ID, got %d: eskit streams show <stream-id> (after `--` when it starts with a dash)", len(pos))
	}
	id := pos[0]
	store, pool, err := pg.store(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	defer store.Close()
	n := 0
	var t *table
	if !*asJSON {
		t = newTable(c.stdout, "VERSION", "POSITION", "TYPE", "RECORDED AT", "EVENT ID", "DATA")
	}
	for rec, err := range store.ReadStream(ctx, id, *from) {
		if err != nil {
			return err
		}
		if *asJSON {
			if err := jsonLine(c.stdout, recordJSON(rec)); err != nil {
				return err
			}
		} else {
			t.row(rec.Version, rec.Position, rec.Type, rec.RecordedAt.Format(time.RFC3339Nano), rec.ID, compactData(rec))
		}
		n++
		if *limit > 0 && n >= *limit {
			break
		}
	}
	if t != nil {
		return t.flush()
	}
	return nil
}

// recordJSON is a record as scripts see it: the payload decoded when it is
// JSON, base64 otherwise.
func recordJSON(rec eventstore.Record) map[string]any {
	m := map[string]any{
		"stream_id":   rec.StreamID,
		"version":     rec.Version,
		"position":    rec.Position.String(),
		"type":        rec.Type,
		"id":          rec.ID.String(),
		"recorded_at": rec.RecordedAt,
	}
	if len(rec.Metadata) > 0 {
		m["metadata"] = rec.Metadata
	}
	if isJSON(rec) {
		m["data"] = json.RawMessage(rec.Data)
	} else {
		m["data_base64"] = rec.Data
	}
	return m
}

func isJSON(rec eventstore.Record) bool {
	ct := rec.Metadata.Get(eventstore.MetaContentType)
	return (ct == "" || ct == eventstore.JSONContentType) && json.Valid(rec.Data)
}

// compactData is the payload on one line for the table view.
func compactData(rec eventstore.Record) string {
	if !isJSON(rec) {
		return fmt.Sprintf("<%d bytes %s>", len(rec.Data), rec.Metadata.Get(eventstore.MetaContentType))
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, rec.Data); err != nil {
		return string(rec.Data)
	}
	return buf.String()
}
