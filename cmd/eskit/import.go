package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/uuid"

	"github.com/eskit/eskit/cmd/eskit/internal/progress"
	"github.com/eskit/eskit/eventstore"
)

// importRecord is one line of an import: a record as `eskit streams show
// -json` and `eskit tail -json` print it (position and time are the
// store's to assign, and are ignored).
type importRecord struct {
	StreamID   string              `json:"stream_id"`
	Version    int64               `json:"version"`
	Type       string              `json:"type"`
	ID         string              `json:"id"`
	Metadata   eventstore.Metadata `json:"metadata"`
	Data       json.RawMessage     `json:"data"`
	DataBase64 []byte              `json:"data_base64"`
}

// importer is where an import writes (pgstore.Store.Import).
type importer interface {
	Import(ctx context.Context, streams []eventstore.StreamAppend) (eventstore.AppendResult, error)
}

// runImport bulk-loads new streams from JSON lines (a file or stdin), in
// batches of whole streams, each batch one transaction, showing progress.
func runImport(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("import", "[file] [flags]\n\nBulk-load new streams from JSON lines, one record per line as `eskit streams show -json`\nprints them (stream_id, type, data or data_base64, and optionally id, version, metadata),\neach stream's events together and in order. Reads stdin without a file.")
	var pg pgFlags
	pg.register(fs)
	batch := fs.Int("batch", 10000, "events per transaction (whole streams: a batch holds at least one stream)")
	every := fs.Duration("progress", time.Second, "how often to show progress (0: never)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return usagef("want at most one file, got %d", len(pos))
	}
	if *batch <= 0 {
		return usagef("-batch must be positive")
	}
	in := io.Reader(os.Stdin)
	total := int64(-1)
	name := "stdin"
	if len(pos) == 1 && pos[0] != "-" {
		f, err := os.Open(pos[0])
		if err != nil {
			return err
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			total = fi.Size()
		}
		in, name = f, pos[0]
	}
	store, pool, err := pg.store(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	defer store.Close()
	n, streams, err := importLines(ctx, store, in, name, total, *batch, *every, progress.NewPrinter(c.stderr))
	if err != nil {
		return fmt.Errorf("%w (%d events of %d streams imported before)", err, n, streams)
	}
	fmt.Fprintf(c.stdout, "imported %d events of %d streams\n", n, streams)
	return nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// importLines reads records and imports them in batches of whole streams;
// it returns the events and streams imported.
func importLines(ctx context.Context, dst importer, in io.Reader, name string, size int64, batchSize int,
	every time.Duration, bar *progress.Printer) (events, streams int64, err error) {
	cr := &countingReader{r: in}
	sc := bufio.NewScanner(cr)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	var (
		pending   []eventstore.StreamAppend
		buffered  int
		seen      = map[string]bool{}
		line      int
		meter     progress.Meter
		lastShown time.Time
	)
	show := func(force bool) {
		now := time.Now()
		if every <= 0 || (!force && now.Sub(lastShown) < every) {
			return
		}
		lastShown = now
		l := progress.Line{Label: "importing " + name, Done: cr.n, Total: size, Unit: "bytes",
			Rate: meter.Sample(0, cr.n, now), Note: fmt.Sprintf(", %d events of %d streams imported", events, streams)}
		bar.Update(l)
	}
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		if _, err := dst.Import(ctx, pending); err != nil {
			return fmt.Errorf("import the batch ending at line %d: %w", line, err)
		}
		events += int64(buffered)
		streams += int64(len(pending))
		pending, buffered = pending[:0], 0
		show(false)
		return nil
	}
	defer bar.Done()
	for sc.Scan() {
		line++
		if len(sc.Bytes()) == 0 {
			continue
		}
		var r importRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return events, streams, fmt.Errorf("line %d: not a record: %w", line, err)
		}
		ev, err := r.event()
		if err != nil {
			return events, streams, fmt.Errorf("line %d: %w", line, err)
		}
		last := len(pending) - 1
		if last < 0 || pending[last].StreamID != r.StreamID {
			if seen[r.StreamID] {
				return events, streams, fmt.Errorf("line %d: stream %q appears again after other streams: give each stream's events together", line, r.StreamID)
			}
			if buffered >= batchSize {
				if err := flush(); err != nil {
					return events, streams, err
				}
			}
			seen[r.StreamID] = true
			pending = append(pending, eventstore.StreamAppend{StreamID: r.StreamID, Expected: eventstore.NoStream})
			last = len(pending) - 1
		}
		if want := int64(len(pending[last].Events)) + 1; r.Version != 0 && r.Version != want {
			return events, streams, fmt.Errorf("line %d: stream %q: version %d where %d comes next: give each stream's events in order", line, r.StreamID, r.Version, want)
		}
		pending[last].Events = append(pending[last].Events, ev)
		buffered++
	}
	if err := sc.Err(); err != nil {
		return events, streams, fmt.Errorf("read %s: %w", name, err)
	}
	if err := flush(); err != nil {
		return events, streams, err
	}
	show(true)
	return events, streams, nil
}

// event is the record's event to import.
func (r importRecord) event() (eventstore.Event, error) {
	if r.StreamID == "" || r.Type == "" {
		return eventstore.Event{}, errors.New("a record needs stream_id and type")
	}
	ev := eventstore.Event{Type: r.Type, Metadata: r.Metadata}
	switch {
	case len(r.Data) > 0 && r.DataBase64 != nil:
		return eventstore.Event{}, errors.New("a record has data or data_base64, not both")
	case len(r.Data) > 0:
		ev.Data = r.Data
	default:
		ev.Data = r.DataBase64
	}
	if r.ID != "" {
		id, err := uuid.Parse(r.ID)
		if err != nil {
			return eventstore.Event{}, fmt.Errorf("id %q: %w", r.ID, err)
		}
		ev.ID = id
	}
	return ev, nil
}
