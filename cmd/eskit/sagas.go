package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/saga"
)

const sagasUsage = `Usage:
  eskit sagas list <saga> [-state running|waiting|parked|done] [-limit n] [-after instance-id] [-json] [flags]
  eskit sagas counts <saga> [-json] [flags]
  eskit sagas show <saga> <instance-id> [-json] [flags]
  eskit sagas retry <saga> <instance-id> [-json] [flags]
  eskit sagas skip <saga> <instance-id> [-json] [flags]
Flags may come before or after the names; ` + "`--`" + ` ends them (for an instance ID that starts with a dash).`

func runSagas(ctx context.Context, c *cli, args []string) error {
	if len(args) == 0 {
		return usagef("want a subcommand\n%s", sagasUsage)
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprintln(c.stderr, sagasUsage)
		return nil
	case "list":
		return sagasList(ctx, c, args[1:])
	case "counts":
		return sagasCounts(ctx, c, args[1:])
	case "show":
		return sagasShow(ctx, c, args[1:])
	case "retry":
		return sagasAct(ctx, c, false, args[1:])
	case "skip":
		return sagasAct(ctx, c, true, args[1:])
	}
	return usagef("unknown sagas subcommand %q\n%s", args[0], sagasUsage)
}

// sagaArgs checks the positional arguments of a sagas subcommand, before
// anything connects: the saga's name and, when withID is set, an instance
// ID.
func sagaArgs(pos []string, withID bool) (name, id string, err error) {
	want := "a saga name"
	n := 1
	if withID {
		want, n = "a saga name and an instance ID (after `--` when it starts with a dash)", 2
	}
	if len(pos) != n {
		return "", "", usagef("want %s, got %d argument(s)", want, len(pos))
	}
	name = pos[0]
	if err := saga.ValidateName(name); err != nil {
		return "", "", usagef("bad saga name: %v", err)
	}
	if withID {
		id = pos[1]
		if err := saga.ValidateInstanceID(id); err != nil {
			return "", "", usagef("bad instance ID: %v", err)
		}
	}
	return name, id, nil
}

// openSagas opens the saga store of the schema, after checking that the
// schema's migrations (the saga tables among them) are applied.
func openSagas(ctx context.Context, pg *pgFlags) (*pgstore.SagaStore, func(), error) {
	store, pool, err := pg.store(ctx)
	if err != nil {
		return nil, nil, err
	}
	closeAll := func() { store.Close(); pool.Close() }
	sagas, err := pgstore.NewSagaStore(pool, pg.schema)
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	return sagas, closeAll, nil
}

func sagasList(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("sagas list", "<saga> [flags]\n\nThe saga's instances, ordered by ID, a page at a time.")
	var pg pgFlags
	pg.register(fs)
	state := fs.String("state", "", "only instances in this state: running, waiting, parked or done")
	limit := fs.Int("limit", 100, "most instances to list (one page)")
	after := fs.String("after", "", "start after this instance ID: the last one of the previous page")
	asJSON := fs.Bool("json", false, "print JSON lines, one per instance")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	name, _, err := sagaArgs(pos, false)
	if err != nil {
		return err
	}
	status := saga.Status(*state)
	if status != "" && !status.Valid() {
		return usagef("bad -state %q: want running, waiting, parked or done", *state)
	}
	if *limit <= 0 {
		return usagef("-limit must be positive")
	}
	store, closeStore, err := openSagas(ctx, &pg)
	if err != nil {
		return err
	}
	defer closeStore()
	page, err := store.List(ctx, name, saga.Filter{Status: status, After: *after, Limit: *limit})
	if err != nil {
		return cleanErr(err)
	}
	// List fills in each instance's next deadline and held count.
	if len(page) == 0 && status == "" && *after == "" {
		fmt.Fprintf(c.stderr, "saga %q has no instances in schema %q (is the name right?)\n", name, pg.schema)
	}
	if *asJSON {
		for _, in := range page {
			if err := jsonLine(c.stdout, instanceJSON(in, false)); err != nil {
				return err
			}
		}
		return nil
	}
	t := newTable(c.stdout, "INSTANCE", "STATUS", "PARTITION", "VERSION", "UPDATED AT", "NEXT DEADLINE", "HELD", "PARKED ON", "ERROR")
	for _, in := range page {
		parkedOn, parkErr := "-", "-"
		if in.Park != nil {
			parkedOn = parkTarget(in.Park) + " (" + attempts(in.Park.Attempts) + ")"
			parkErr = printable(truncate(in.Park.Error, 80))
		}
		t.row(printable(in.ID), printable(string(in.Status)), in.Partition, in.Version, timeOrDash(in.UpdatedAt), nextDeadline(in), in.Held, parkedOn, parkErr)
	}
	if err := t.flush(); err != nil {
		return err
	}
	if len(page) == *limit {
		fmt.Fprintf(c.stderr, "more instances may follow: the next page is -after %s\n", printable(page[len(page)-1].ID))
	}
	return nil
}

func sagasCounts(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("sagas counts", "<saga> [flags]\n\nHow many instances of the saga are in each state.")
	var pg pgFlags
	pg.register(fs)
	asJSON := fs.Bool("json", false, "print one JSON object")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	name, _, err := sagaArgs(pos, false)
	if err != nil {
		return err
	}
	store, closeStore, err := openSagas(ctx, &pg)
	if err != nil {
		return err
	}
	defer closeStore()
	counts, err := store.Count(ctx, name)
	if err != nil {
		return cleanErr(err)
	}
	// Every status, in display order, then any the store knows and this
	// build does not.
	order := saga.Statuses[:]
	var extra []saga.Status
	for st := range counts {
		if !slices.Contains(order, st) {
			extra = append(extra, st)
		}
	}
	slices.Sort(extra)
	order = append(slices.Clip(order), extra...)
	total := 0
	for _, n := range counts {
		total += n
	}
	if total == 0 {
		fmt.Fprintf(c.stderr, "saga %q has no instances in schema %q (is the name right?)\n", name, pg.schema)
	}
	if *asJSON {
		m := map[string]any{"saga": name, "total": total}
		byState := map[string]int{}
		for _, st := range order {
			byState[string(st)] = counts[st]
		}
		m["states"] = byState
		return jsonLine(c.stdout, m)
	}
	t := newTable(c.stdout, "STATE", "INSTANCES")
	for _, st := range order {
		t.row(printable(string(st)), counts[st])
	}
	t.row("total", total)
	return t.flush()
}

func sagasShow(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("sagas show", "<saga> <instance-id> [flags]\n\nOne instance: its state, status, pending commands, deadlines, held records and what it is parked on.")
	var pg pgFlags
	pg.register(fs)
	asJSON := fs.Bool("json", false, "print one JSON object")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	name, id, err := sagaArgs(pos, true)
	if err != nil {
		return err
	}
	store, closeStore, err := openSagas(ctx, &pg)
	if err != nil {
		return err
	}
	defer closeStore()
	in, err := store.Get(ctx, name, id)
	if err != nil {
		return instanceErr(err, name, id, "show")
	}
	if *asJSON {
		return jsonLine(c.stdout, instanceJSON(in, true))
	}
	kv := &table{tw: tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)}
	kv.row("saga", printable(in.Saga))
	kv.row("instance", printable(in.ID))
	kv.row("status", printable(string(in.Status)))
	kv.row("partition", in.Partition)
	kv.row("version", in.Version)
	kv.row("created at", timeOrDash(in.CreatedAt))
	kv.row("updated at", timeOrDash(in.UpdatedAt))
	kv.row("last position", in.LastPosition)
	kv.row("state", payloadText(in.State, ""))
	if in.Park != nil {
		kv.row("parked on", parkTarget(in.Park))
		kv.row("parked attempts", in.Park.Attempts)
		kv.row("parked error", printable(in.Park.Error))
	} else {
		kv.row("parked on", "-")
	}
	kv.row("pending commands", len(in.Commands))
	kv.row("deadlines", len(in.Deadlines))
	kv.row("held records", in.Held)
	if err := kv.flush(); err != nil {
		return err
	}
	if len(in.Commands) > 0 {
		fmt.Fprintln(c.stdout, "\nPending commands:")
		t := newTable(c.stdout, "SEQ", "COMMAND ID", "TYPE", "ATTEMPTS", "NEXT ATTEMPT", "LAST ERROR", "DATA")
		for _, cmd := range in.Commands {
			t.row(cmd.Seq, cmd.ID, printable(cmd.Type), cmd.Attempts, timeOrDash(cmd.NextAttempt),
				printable(dash(cmd.LastError)), payloadText(cmd.Data, cmd.Metadata.Get(eventstore.MetaContentType)))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if len(in.Deadlines) > 0 {
		fmt.Fprintln(c.stdout, "\nDeadlines:")
		t := newTable(c.stdout, "NAME", "DUE", "DEADLINE ID")
		for _, d := range in.Deadlines {
			t.row(printable(d.Name), timeOrDash(d.Due), d.ID)
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if len(in.HeldRecords) > 0 {
		fmt.Fprintln(c.stdout, "\nHeld records:")
		t := newTable(c.stdout, "SEQ", "EVENT ID", "STREAM", "VERSION", "POSITION", "TYPE")
		for _, h := range in.HeldRecords {
			r := h.Record
			t.row(h.Seq, r.ID, printable(r.StreamID), r.Version, r.Position, printable(r.Type))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	return nil
}

// sagasAct retries or skips what a parked instance is parked on.
func sagasAct(ctx context.Context, c *cli, skip bool, args []string) error {
	verb := "retry"
	if skip {
		verb = "skip"
	}
	help := "<saga> <instance-id> [flags]\n\nTry again what the parked instance is parked on (its attempts start over)."
	if skip {
		help = "<saga> <instance-id> [flags]\n\nDrop what the parked instance is parked on: the command is never sent, the record never applied, the deadline never fired."
	}
	fs := c.flagSet("sagas "+verb, help)
	var pg pgFlags
	pg.register(fs)
	asJSON := fs.Bool("json", false, "print one JSON object")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	name, id, err := sagaArgs(pos, true)
	if err != nil {
		return err
	}
	store, closeStore, err := openSagas(ctx, &pg)
	if err != nil {
		return err
	}
	defer closeStore()
	// What it is parked on, to say what was retried or skipped.
	before, found, err := store.Load(ctx, name, id)
	switch {
	case err != nil:
		return cleanErr(err)
	case !found:
		return instanceErr(saga.ErrNotFound, name, id, verb)
	case before.Park == nil:
		return notParked(name, id, before.Status, verb)
	}
	if skip {
		err = store.Skip(ctx, name, id)
	} else {
		err = store.Retry(ctx, name, id)
	}
	if err != nil {
		return instanceErr(err, name, id, verb)
	}
	after, _, err := store.Load(ctx, name, id)
	if err != nil {
		return cleanErr(err)
	}
	if *asJSON {
		return jsonLine(c.stdout, map[string]any{
			"saga": name, "id": id, "action": verb, "park": before.Park, "status": after.Status,
		})
	}
	what := parkTarget(before.Park)
	if skip {
		fmt.Fprintf(c.stdout, "saga %q instance %q: skipped %s (after %s); now %s\n", name, id, what, attempts(before.Park.Attempts), after.Status)
	} else {
		fmt.Fprintf(c.stdout, "saga %q instance %q: retrying %s (after %s; they start over); now %s\n", name, id, what, attempts(before.Park.Attempts), after.Status)
	}
	return nil
}

// instanceErr is err of an operation on one instance, with what to do
// about the usual ones.
func instanceErr(err error, name, id, verb string) error {
	var ne *notParkedError
	switch {
	case errors.As(err, &ne):
		return err
	case errors.Is(err, saga.ErrNotFound):
		return &sentinelError{msg: fmt.Sprintf("saga %q has no instance %q", name, id), err: saga.ErrNotFound}
	case errors.Is(err, saga.ErrNotParked):
		return notParked(name, id, "", verb)
	}
	return cleanErr(err)
}

// sentinelError is a message for people that matches a sentinel error.
type sentinelError struct {
	msg string
	err error
}

func (e *sentinelError) Error() string { return e.msg }
func (e *sentinelError) Unwrap() error { return e.err }

// notParkedError is a retry or skip of an instance that is not parked.
type notParkedError struct {
	saga, id, verb string
	status         saga.Status
}

func notParked(name, id string, status saga.Status, verb string) error {
	return &notParkedError{saga: name, id: id, verb: verb, status: status}
}

func (e *notParkedError) Error() string {
	is := "not parked"
	if e.status != "" {
		is = fmt.Sprintf("%s, not parked", e.status)
	}
	return fmt.Sprintf("saga %q instance %q is %s: nothing to %s", e.saga, e.id, is, e.verb)
}

func (e *notParkedError) Unwrap() error { return saga.ErrNotParked }

// cleanError is an error whose text may hold what a store was given (an
// instance ID, a payload): its non-printing characters are escaped, so
// that nothing reaches the terminal raw. It unwraps to the original.
type cleanError struct{ err error }

func (e *cleanError) Error() string { return escapeText(e.err.Error()) }
func (e *cleanError) Unwrap() error { return e.err }

func cleanErr(err error) error {
	var ie *saga.InvalidError
	if errors.As(err, &ie) {
		return &usageError{msg: escapeText(err.Error())}
	}
	return &cleanError{err: err}
}

// isPrintable reports whether r prints as itself on one line: no control
// or format character (no line break, escape sequence or bidirectional
// override), no invalid UTF-8.
func isPrintable(r rune) bool { return r == ' ' || strconv.IsPrint(r) }

// printable is s for a table cell: as it is when every character prints
// (see isPrintable), else quoted as a Go string, as it is too when it
// starts with a quote (so that a quoted cell is never ambiguous).
func printable(s string) string {
	if !utf8.ValidString(s) || strings.HasPrefix(s, `"`) || strings.ContainsFunc(s, func(r rune) bool { return !isPrintable(r) }) {
		return strconv.Quote(s)
	}
	return s
}

// escapeText is s with each character that does not print escaped as in a
// Go string (\n, \x1b, \u202e), for messages that embed values.
func escapeText(s string) string {
	var b strings.Builder
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[0])
		case isPrintable(r):
			b.WriteString(s[:n])
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
		s = s[n:]
	}
	return b.String()
}

// truncate cuts s to at most n characters, marking the cut.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

// parkTarget says what an instance is parked on, for people.
func parkTarget(p *saga.Park) string {
	var what string
	switch p.Kind {
	case saga.ParkCommand:
		what = "command"
	case saga.ParkRecord:
		what = "record"
	case saga.ParkDeadline:
		what = "deadline"
	default:
		what = printable(string(p.Kind))
	}
	if p.Ref != "" {
		what += " " + printable(p.Ref)
	}
	return what
}

// attempts is n attempts, for people.
func attempts(n int) string {
	if n == 1 {
		return "1 attempt"
	}
	return fmt.Sprintf("%d attempts", n)
}

// nextDeadline is the earliest pending deadline: its name and due time.
func nextDeadline(in saga.Instance) string {
	if len(in.Deadlines) == 0 {
		return "-"
	}
	next := slices.MinFunc(in.Deadlines, func(a, b saga.Deadline) int { return a.Due.Compare(b.Due) })
	s := printable(next.Name) + " " + next.Due.UTC().Format(time.RFC3339)
	if more := len(in.Deadlines) - 1; more > 0 {
		s += fmt.Sprintf(" (+%d more)", more)
	}
	return s
}

// jsonPayload is data when it is JSON (of the JSON content type, or of
// none) that a decoder reads back unchanged.
func jsonPayload(data []byte, contentType string) (json.RawMessage, bool) {
	if (contentType != "" && contentType != eventstore.JSONContentType) || !utf8.Valid(data) || !json.Valid(data) {
		return nil, false
	}
	return json.RawMessage(data), true
}

// payloadText is a payload for a table: compact JSON, or its size and
// base64 when it is not JSON; quoted when it holds a character that does
// not print.
func payloadText(data []byte, contentType string) string {
	if data == nil {
		return "-"
	}
	raw, ok := jsonPayload(data, contentType)
	if !ok {
		return fmt.Sprintf("<%d bytes %s> %s", len(data), dash(printable(contentType)), base64.StdEncoding.EncodeToString(data))
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return printable(string(data))
	}
	return printable(buf.String())
}

// putPayload sets key to data decoded when it is JSON, else key_base64.
func putPayload(m map[string]any, key string, data []byte, contentType string) {
	if data == nil {
		m[key] = nil
		return
	}
	if raw, ok := jsonPayload(data, contentType); ok {
		m[key] = raw
		return
	}
	m[key+"_base64"] = data
}

// instanceJSON is an instance for scripts; with detail, its state,
// commands and held records too.
func instanceJSON(in saga.Instance, detail bool) map[string]any {
	deadlines := in.Deadlines
	if deadlines == nil {
		deadlines = []saga.Deadline{}
	}
	var next any
	if len(in.Deadlines) > 0 {
		next = slices.MinFunc(in.Deadlines, func(a, b saga.Deadline) int { return a.Due.Compare(b.Due) })
	}
	m := map[string]any{
		"saga": in.Saga, "id": in.ID, "partition": in.Partition, "status": in.Status, "done": in.Done,
		"version": in.Version, "created_at": timeOrNil(in.CreatedAt), "updated_at": timeOrNil(in.UpdatedAt),
		"last_position": in.LastPosition.String(), "park": in.Park, "deadlines": deadlines,
		"next_deadline": next, "held": in.Held,
	}
	if !detail {
		return m
	}
	putPayload(m, "state", in.State, "")
	cmds := make([]map[string]any, 0, len(in.Commands))
	for _, c := range in.Commands {
		cm := map[string]any{
			"seq": c.Seq, "id": c.ID.String(), "type": c.Type, "attempts": c.Attempts,
			"next_attempt": timeOrNil(c.NextAttempt), "last_error": c.LastError,
		}
		if len(c.Metadata) > 0 {
			cm["metadata"] = c.Metadata
		}
		putPayload(cm, "data", c.Data, c.Metadata.Get(eventstore.MetaContentType))
		cmds = append(cmds, cm)
	}
	m["commands"] = cmds
	held := make([]map[string]any, 0, len(in.HeldRecords))
	for _, h := range in.HeldRecords {
		held = append(held, map[string]any{"seq": h.Seq, "record": recordJSON(h.Record)})
	}
	m["held_records"] = held
	return m
}
