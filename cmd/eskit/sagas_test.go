package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/saga"
)

// The events and the command of the saga the tests run.
type (
	orderOpened struct {
		Order string `json:"order"`
		Note  string `json:"note"`
	}
	orderWaiting struct {
		Order string `json:"order"`
	}
	orderClosed struct {
		Order string `json:"order"`
	}
	orderBroken struct {
		Order string `json:"order"`
	}
	notifyOrder struct {
		Order string `json:"order"`
	}
	orderState struct {
		Note string `json:"note"`
	}
)

// Hostile instance ID and state: terminal escapes, a line break, a tab, a
// bidirectional override, a leading quote.
const (
	evilID   = "\"evil\x1b[2J\n\u202eid\t1"
	evilNote = "\x1b]0;pwned\x07 \u202eeton"
)

// sagaLine is a line of `eskit sagas list -json` (and show's object).
type sagaLine struct {
	Saga         string          `json:"saga"`
	ID           string          `json:"id"`
	Status       string          `json:"status"`
	Done         bool            `json:"done"`
	Version      int64           `json:"version"`
	Held         int             `json:"held"`
	Park         *saga.Park      `json:"park"`
	Deadlines    []saga.Deadline `json:"deadlines"`
	NextDeadline *saga.Deadline  `json:"next_deadline"`
	State        json.RawMessage `json:"state"`
	Commands     []struct {
		Type      string          `json:"type"`
		Attempts  int             `json:"attempts"`
		LastError string          `json:"last_error"`
		Data      json.RawMessage `json:"data"`
	} `json:"commands"`
	HeldRecords []struct {
		Seq    int64 `json:"seq"`
		Record struct {
			Type string `json:"type"`
		} `json:"record"`
	} `json:"held_records"`
}

func decodeLines(t *testing.T, out string) []sagaLine {
	t.Helper()
	var lines []sagaLine
	for l := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var s sagaLine
		require.NoError(t, json.Unmarshal([]byte(l), &s), l)
		lines = append(lines, s)
	}
	return lines
}

// requireTerminalSafe fails when out holds a character that does not
// print (other than the line breaks between lines).
func requireTerminalSafe(t *testing.T, out string) {
	t.Helper()
	require.True(t, utf8.ValidString(out), "invalid UTF-8 in %q", out)
	for _, r := range out {
		if r != '\n' && !isPrintable(r) {
			require.Failf(t, "raw non-printing character", "%U in %q", r, out)
		}
	}
}

// seedSagas runs a saga over PostgreSQL until it has instances in every
// state: running (run-1, -dash, the hostile one), waiting (wait-1), parked
// on a command (bad-1) and on a record (rec-1), done (done-1).
func seedSagas(t *testing.T, url, schema string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool := testsvc.PoolFor(t, url)
	es, err := pgstore.New(ctx, pool, pgstore.WithSchema(schema), pgstore.WithAutoMigrate())
	require.NoError(t, err)
	t.Cleanup(es.Close)
	sagas, err := pgstore.NewSagaStore(pool, schema)
	require.NoError(t, err)

	reg := eventstore.NewRegistry()
	require.NoError(t, errors.Join(
		eventstore.Register[orderOpened](reg, "test.OrderOpened"),
		eventstore.Register[orderWaiting](reg, "test.OrderWaiting"),
		eventstore.Register[orderClosed](reg, "test.OrderClosed"),
		eventstore.Register[orderBroken](reg, "test.OrderBroken"),
		eventstore.Register[notifyOrder](reg, "test.NotifyOrder")))
	def, err := saga.New("cli.orders", reg, reg,
		saga.On(func(_ eventstore.Record, e orderOpened) string { return e.Order },
			func(_ context.Context, s *saga.Step[orderState], e orderOpened) error {
				s.State().Note = e.Note
				s.Send(notifyOrder{Order: e.Order})
				return nil
			}, saga.Starts()),
		saga.On(func(_ eventstore.Record, e orderWaiting) string { return e.Order },
			func(_ context.Context, s *saga.Step[orderState], _ orderWaiting) error {
				s.After("expire", time.Hour)
				return nil
			}),
		saga.On(func(_ eventstore.Record, e orderClosed) string { return e.Order },
			func(_ context.Context, s *saga.Step[orderState], _ orderClosed) error {
				s.Complete()
				return nil
			}),
		saga.On(func(_ eventstore.Record, e orderBroken) string { return e.Order },
			func(context.Context, *saga.Step[orderState], orderBroken) error {
				return errors.New("cannot apply\x1b[31m broken")
			}),
		saga.OnDeadline("expire", func(_ context.Context, s *saga.Step[orderState]) error {
			s.Complete()
			return nil
		}))
	require.NoError(t, err)
	disp := saga.DispatcherFunc(func(_ context.Context, cmd any) (commandbus.Result, error) {
		if cmd.(notifyOrder).Order == "bad-1" {
			return commandbus.Result{}, errors.New("notifier down\n\x1b[31mred")
		}
		return commandbus.Result{}, nil
	})
	runner, err := saga.NewRunner(def, sagas, es, disp,
		saga.WithDispatchRetry(1, saga.DefaultDispatchBackoff()),
		saga.WithStepRetry(1, saga.DefaultStepBackoff()),
		saga.WithLogger(slog.New(slog.DiscardHandler)))
	require.NoError(t, err)

	var evs []eventstore.Event
	add := func(v any) {
		ev, err := reg.Encode(v, nil)
		require.NoError(t, err)
		evs = append(evs, ev)
	}
	for _, id := range []string{"run-1", "wait-1", "bad-1", "rec-1", "done-1", "-dash"} {
		add(orderOpened{Order: id, Note: "note of " + id})
	}
	add(orderOpened{Order: evilID, Note: evilNote})
	add(orderWaiting{Order: "wait-1"})
	add(orderClosed{Order: "done-1"})
	add(orderBroken{Order: "rec-1"})
	_, err = es.Append(ctx, "orders-1", eventstore.NoStream, evs...)
	require.NoError(t, err)
	require.NoError(t, runner.Drain(ctx))
}

func TestSagasCommands(t *testing.T) {
	url := testsvc.Database(t)
	const schema = "sagaops"
	seedSagas(t, url, schema)
	pg := []string{"-postgres-url", url, "-schema", schema}
	sagas := func(args ...string) (int, string, string) {
		t.Helper()
		return eskit(t, append(append([]string{"sagas"}, args...), pg...)...)
	}
	allIDs := []string{evilID, "-dash", "bad-1", "done-1", "rec-1", "run-1", "wait-1"}

	t.Run("counts", func(t *testing.T) {
		code, out, errOut := sagas("counts", "cli.orders")
		require.Equal(t, 0, code, errOut)
		require.Regexp(t, `(?m)^running\s+3$`, out)
		require.Regexp(t, `(?m)^waiting\s+1$`, out)
		require.Regexp(t, `(?m)^parked\s+2$`, out)
		require.Regexp(t, `(?m)^done\s+1$`, out)
		require.Regexp(t, `(?m)^total\s+7$`, out)

		code, out, errOut = sagas("counts", "-json", "cli.orders")
		require.Equal(t, 0, code, errOut)
		require.JSONEq(t, `{"saga":"cli.orders","total":7,"states":{"running":3,"waiting":1,"parked":2,"done":1}}`, out)

		// A saga without instances: zeros, and a hint on stderr.
		code, out, errOut = sagas("counts", "cli.nope")
		require.Equal(t, 0, code, errOut)
		require.Regexp(t, `(?m)^total\s+0$`, out)
		require.Contains(t, errOut, `saga "cli.nope" has no instances`)
	})

	t.Run("list", func(t *testing.T) {
		code, out, errOut := sagas("list", "cli.orders")
		require.Equal(t, 0, code, errOut)
		requireTerminalSafe(t, out)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		require.Len(t, lines, 1+len(allIDs), out)
		require.Regexp(t, `^INSTANCE\s+STATUS\s+PARTITION\s+VERSION\s+UPDATED AT\s+NEXT DEADLINE\s+HELD\s+PARKED ON\s+ERROR$`, lines[0])
		// Ordered by ID's bytes; the hostile ID is quoted.
		require.True(t, strings.HasPrefix(lines[1], strconv.Quote(evilID)+" "), lines[1])
		row := func(id string) string {
			for _, l := range lines[1:] {
				if strings.HasPrefix(l, id+" ") {
					return l
				}
			}
			t.Fatalf("no row of %s in\n%s", id, out)
			return ""
		}
		require.Regexp(t, `^run-1\s+running\s+0\s+\d+\s+\S+Z\s+-\s+0\s+-\s+-$`, row("run-1"))
		require.Regexp(t, `^wait-1\s+waiting\s.*\sexpire \d{4}-\d\d-\d\dT\S+Z\s+0\s+-\s+-$`, row("wait-1"))
		require.Regexp(t, `^bad-1\s+parked\s.*\scommand [0-9a-f-]{36} \(1 attempt\)\s+"notifier down\\n\\x1b\[31mred"$`, row("bad-1"))
		require.Regexp(t, `^rec-1\s+parked\s.*\s1\s+record [0-9a-f-]{36} \(1 attempt\)\s+"`, row("rec-1"))
		require.Regexp(t, `^done-1\s+done\s`, row("done-1"))
		require.Empty(t, errOut)

		code, out, errOut = sagas("list", "-json", "cli.orders")
		require.Equal(t, 0, code, errOut)
		got := decodeLines(t, out)
		ids := make([]string, 0, len(got))
		for _, l := range got {
			ids = append(ids, l.ID)
			require.Equal(t, "cli.orders", l.Saga)
			require.Nil(t, l.State, "list leaves the state out")
		}
		require.Equal(t, allIDs, ids, "exact IDs, in order")
		byID := map[string]sagaLine{}
		for _, l := range got {
			byID[l.ID] = l
		}
		require.Equal(t, "waiting", byID["wait-1"].Status)
		require.NotNil(t, byID["wait-1"].NextDeadline)
		require.Equal(t, "expire", byID["wait-1"].NextDeadline.Name)
		require.Len(t, byID["wait-1"].Deadlines, 1)
		require.Equal(t, saga.ParkCommand, byID["bad-1"].Park.Kind)
		require.Equal(t, "notifier down\n\x1b[31mred", byID["bad-1"].Park.Error)
		require.Equal(t, saga.ParkRecord, byID["rec-1"].Park.Kind)
		require.Equal(t, 1, byID["rec-1"].Held)
		require.True(t, byID["done-1"].Done)
		require.Equal(t, "running", byID[evilID].Status)

		// By state.
		code, out, errOut = sagas("list", "cli.orders", "-state", "parked", "-json")
		require.Equal(t, 0, code, errOut)
		ids = nil
		for _, l := range decodeLines(t, out) {
			ids = append(ids, l.ID)
		}
		require.Equal(t, []string{"bad-1", "rec-1"}, ids)
		code, out, errOut = sagas("list", "-state", "done", "cli.orders")
		require.Equal(t, 0, code, errOut)
		require.Len(t, strings.Split(strings.TrimSpace(out), "\n"), 2)
		require.Contains(t, out, "done-1")

		// Pages: a full page says how to get the next one, on stderr.
		code, out, errOut = sagas("list", "-limit", "2", "cli.orders")
		require.Equal(t, 0, code, errOut)
		require.Len(t, strings.Split(strings.TrimSpace(out), "\n"), 3)
		require.Contains(t, errOut, "-after -dash")
		var paged []string
		after := ""
		for range 10 {
			code, out, errOut = sagas("list", "-json", "-limit", "3", "-after", after, "cli.orders")
			require.Equal(t, 0, code, errOut)
			page := decodeLines(t, out)
			for _, l := range page {
				paged = append(paged, l.ID)
			}
			if len(page) < 3 {
				break
			}
			after = page[len(page)-1].ID
		}
		require.Equal(t, allIDs, paged)
	})

	t.Run("show", func(t *testing.T) {
		code, out, errOut := sagas("show", "cli.orders", "bad-1")
		require.Equal(t, 0, code, errOut)
		requireTerminalSafe(t, out)
		require.Regexp(t, `(?m)^status\s+parked$`, out)
		require.Regexp(t, `(?m)^state\s+\{"note":"note of bad-1"\}$`, out)
		require.Regexp(t, `(?m)^parked on\s+command [0-9a-f-]{36}$`, out)
		require.Regexp(t, `(?m)^parked attempts\s+1$`, out)
		require.Regexp(t, `(?m)^parked error\s+"notifier down\\n\\x1b\[31mred"$`, out)
		require.Regexp(t, `(?m)^pending commands\s+1$`, out)
		require.Contains(t, out, "Pending commands:")
		require.Regexp(t, `(?m)^\d+\s+[0-9a-f-]{36}\s+test.NotifyOrder\s+1\s+\S+\s+"notifier down\\n\\x1b\[31mred"\s+\{"order":"bad-1"\}$`, out)

		code, out, errOut = sagas("show", "cli.orders", "wait-1")
		require.Equal(t, 0, code, errOut)
		require.Contains(t, out, "Deadlines:")
		require.Regexp(t, `(?m)^expire\s+\d{4}-\S+Z\s+[0-9a-f-]{36}$`, out)
		require.NotContains(t, out, "Pending commands:")

		code, out, errOut = sagas("show", "cli.orders", "rec-1", "-json")
		require.Equal(t, 0, code, errOut)
		rec := decodeLines(t, out)[0]
		require.Len(t, rec.HeldRecords, 1)
		require.Equal(t, "test.OrderBroken", rec.HeldRecords[0].Record.Type)
		require.Equal(t, "cannot apply\x1b[31m broken", rec.Park.Error)

		// The hostile instance: quoted in the table, exact in JSON.
		code, out, errOut = sagas("show", "cli.orders", evilID)
		require.Equal(t, 0, code, errOut)
		requireTerminalSafe(t, out)
		require.Contains(t, out, strconv.Quote(evilID))
		code, out, errOut = sagas("show", "-json", "cli.orders", evilID)
		require.Equal(t, 0, code, errOut)
		evil := decodeLines(t, out)[0]
		require.Equal(t, evilID, evil.ID)
		var st orderState
		require.NoError(t, json.Unmarshal(evil.State, &st))
		require.Equal(t, evilNote, st.Note)
		require.Len(t, evil.Commands, 0, "its command was sent")

		// An ID that starts with a dash follows `--`.
		code, out, errOut = eskit(t, append(append([]string{"sagas", "show", "-json"}, pg...), "cli.orders", "--", "-dash")...)
		require.Equal(t, 0, code, errOut)
		require.Equal(t, "-dash", decodeLines(t, out)[0].ID)

		code, _, errOut = sagas("show", "cli.orders", "nope\x1b[31m")
		require.Equal(t, 1, code)
		require.Contains(t, errOut, `saga "cli.orders" has no instance "nope\x1b[31m"`)
		requireTerminalSafe(t, errOut)
	})

	t.Run("retry and skip", func(t *testing.T) {
		show := func(id string) sagaLine {
			t.Helper()
			code, out, errOut := sagas("show", "-json", "cli.orders", id)
			require.Equal(t, 0, code, errOut)
			return decodeLines(t, out)[0]
		}
		code, out, errOut := sagas("retry", "cli.orders", "bad-1")
		require.Equal(t, 0, code, errOut)
		require.Regexp(t, `^saga "cli.orders" instance "bad-1": retrying command [0-9a-f-]{36} \(after 1 attempt; they start over\); now running\n$`, out)
		bad := show("bad-1")
		require.Equal(t, "running", bad.Status)
		require.Nil(t, bad.Park)
		require.Len(t, bad.Commands, 1, "the command waits to be sent again")
		require.Equal(t, 0, bad.Commands[0].Attempts)

		code, _, errOut = sagas("retry", "cli.orders", "bad-1")
		require.Equal(t, 1, code)
		require.Contains(t, errOut, `saga "cli.orders" instance "bad-1" is running, not parked: nothing to retry`)

		code, out, errOut = sagas("skip", "-json", "cli.orders", "rec-1")
		require.Equal(t, 0, code, errOut)
		var res struct {
			Action string     `json:"action"`
			ID     string     `json:"id"`
			Park   *saga.Park `json:"park"`
			Status string     `json:"status"`
		}
		require.NoError(t, json.Unmarshal([]byte(out), &res))
		require.Equal(t, "skip", res.Action)
		require.Equal(t, "rec-1", res.ID)
		require.Equal(t, saga.ParkRecord, res.Park.Kind)
		require.Equal(t, "running", res.Status)
		rec := show("rec-1")
		require.Nil(t, rec.Park)
		require.Zero(t, rec.Held, "the held record is dropped")

		code, _, errOut = sagas("skip", "cli.orders", "done-1")
		require.Equal(t, 1, code)
		require.Contains(t, errOut, `instance "done-1" is done, not parked: nothing to skip`)
		code, _, errOut = sagas("skip", "cli.orders", "nope")
		require.Equal(t, 1, code)
		require.Contains(t, errOut, `saga "cli.orders" has no instance "nope"`)
		code, _, errOut = sagas("retry", "cli.orders", evilID)
		require.Equal(t, 1, code)
		requireTerminalSafe(t, errOut)
		require.Contains(t, errOut, strconv.Quote(evilID)+" is running, not parked")

		code, out, errOut = sagas("counts", "-json", "cli.orders")
		require.Equal(t, 0, code, errOut)
		require.JSONEq(t, `{"saga":"cli.orders","total":7,"states":{"running":5,"waiting":1,"parked":0,"done":1}}`, out)
	})
}

func TestSagasUsageErrors(t *testing.T) {
	t.Setenv(envPostgresURL, "")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"sagas"}, "want a subcommand"},
		{[]string{"sagas", "frob"}, `unknown sagas subcommand "frob"`},
		{[]string{"sagas", "list"}, "want a saga name, got 0"},
		{[]string{"sagas", "list", "a", "b"}, "want a saga name, got 2"},
		{[]string{"sagas", "show", "s"}, "want a saga name and an instance ID"},
		{[]string{"sagas", "retry", "s"}, "want a saga name and an instance ID"},
		{[]string{"sagas", "list", "-state", "sleeping", "s"}, `bad -state "sleeping"`},
		{[]string{"sagas", "list", "-limit", "0", "s"}, "-limit must be positive"},
		{[]string{"sagas", "show", "s", "a\x00b"}, "bad instance ID"},
		{[]string{"sagas", "counts", strings.Repeat("n", saga.MaxNameLength+1)}, "bad saga name"},
		{[]string{"sagas", "counts", "s"}, "no PostgreSQL URL: set -postgres-url or ESKIT_POSTGRES_URL"},
		{[]string{"sagas", "skip", "s", "i"}, "no PostgreSQL URL"},
	}
	for _, tc := range cases {
		code, _, errOut := eskit(t, tc.args...)
		require.Equal(t, 2, code, "%q: %s", tc.args, errOut)
		require.Contains(t, errOut, tc.want, "%q", tc.args)
		requireTerminalSafe(t, errOut)
	}
	code, _, errOut := eskit(t, "sagas", "-h")
	require.Equal(t, 0, code)
	require.Contains(t, errOut, "eskit sagas list <saga>")
	code, _, errOut = eskit(t, "sagas", "show", "-h")
	require.Equal(t, 0, code)
	require.Contains(t, errOut, "-postgres-url")
	code, out, _ := eskit(t, "help")
	require.Equal(t, 0, code)
	require.Contains(t, out, "sagas")

	// A schema without the saga tables says to migrate.
	url := testsvc.Database(t)
	code, _, errOut = eskit(t, "sagas", "counts", "s", "-postgres-url", url)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "migrat")
}
