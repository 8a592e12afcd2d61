package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/internal/infra/testsvc"
)

// eskit runs the CLI in-process and returns its exit code and output.
func eskit(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code := run(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestHelpAndUnknownCommand(t *testing.T) {
	code, out, _ := eskit(t, "help")
	require.Equal(t, 0, code)
	for _, c := range []string{"migrate", "streams", "tail", "version"} {
		require.Contains(t, out, c)
	}
	code, _, errOut := eskit(t, "frobnicate")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `unknown command "frobnicate"`)

	code, _, errOut = eskit(t, "migrate", "-h")
	require.Equal(t, 0, code)
	require.Contains(t, errOut, "-postgres-url")

	code, out, _ = eskit(t, "version", "-json")
	require.Equal(t, 0, code)
	var v map[string]string
	require.NoError(t, json.Unmarshal([]byte(out), &v))
	require.NotEmpty(t, v["version"])
}

func TestMigrateStreamsTail(t *testing.T) {
	url := testsvc.Database(t)
	pg := []string{"-postgres-url", url, "-schema", "ops"}

	code, out, errOut := eskit(t, append([]string{"migrate", "status"}, pg...)...)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "pending")

	// Commands that need the schema say what to do when it is missing.
	code, _, errOut = eskit(t, append([]string{"streams", "list"}, pg...)...)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "migrat")

	code, out, errOut = eskit(t, append(append([]string{"migrate"}, pg...), "apply")...)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "up to date")
	code, out, _ = eskit(t, append([]string{"migrate", "-json", "status"}, pg...)...)
	require.Equal(t, 0, code)
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(strings.Split(out, "\n")[0]), &m))
	require.Equal(t, "applied", m["state"])

	ctx := context.Background()
	pool := testsvc.PoolFor(t, url)
	store, err := pgstore.New(ctx, pool, pgstore.WithSchema("ops"))
	require.NoError(t, err)
	t.Cleanup(store.Close)
	for _, id := range []string{"account-1", "account-2", "order.1 *>"} {
		_, err := store.Append(ctx, id, eventstore.NoStream,
			eventstore.Event{Type: "Opened", Data: []byte(`{"owner": "ann"}`)},
			eventstore.Event{Type: "Deposited", Data: []byte(`{"amount": 5}`)})
		require.NoError(t, err)
	}

	code, out, errOut = eskit(t, append([]string{"streams", "list", "-prefix", "account-"}, pg...)...)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "account-1")
	require.Contains(t, out, "account-2")
	require.NotContains(t, out, "order")

	code, out, errOut = eskit(t, append([]string{"streams", "show", "-json", "order.1 *>", "-limit", "5"}, pg...)...)
	require.Equal(t, 0, code, errOut)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2)
	var rec struct {
		StreamID string          `json:"stream_id"`
		Version  int64           `json:"version"`
		Type     string          `json:"type"`
		Data     json.RawMessage `json:"data"`
	}
	require.NoError(t, json.Unmarshal([]byte(lines[1]), &rec))
	require.Equal(t, "order.1 *>", rec.StreamID)
	require.EqualValues(t, 2, rec.Version)
	require.Equal(t, "Deposited", rec.Type)
	require.JSONEq(t, `{"amount": 5}`, string(rec.Data))

	code, out, _ = eskit(t, append([]string{"streams", "show", "account-1"}, pg...)...)
	require.Equal(t, 0, code)
	require.Contains(t, out, `{"owner":"ann"}`)

	// A stream ID that starts with a dash follows `--`.
	_, err = store.Append(ctx, "-dash", eventstore.NoStream, eventstore.Event{Type: "Opened", Data: []byte(`{"owner": "bob"}`)})
	require.NoError(t, err)
	code, out, errOut = eskit(t, append(append([]string{"streams", "show", "-from", "1"}, pg...), "--", "-dash")...)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, `{"owner":"bob"}`)

	code, _, errOut = eskit(t, append([]string{"streams", "show", "account-404"}, pg...)...)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, `stream "account-404" not found`)

	code, out, errOut = eskit(t, append([]string{"tail", "-from", "0-0", "-limit", "6", "-json"}, pg...)...)
	require.Equal(t, 0, code, errOut)
	require.Len(t, strings.Split(strings.TrimSpace(out), "\n"), 6)

	code, _, errOut = eskit(t, append([]string{"tail", "-from", "nonsense"}, pg...)...)
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "position")
}

func TestConnectionErrors(t *testing.T) {
	code, _, errOut := eskit(t, "streams", "list", "-postgres-url", "::not a url::")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "bad PostgreSQL URL")

	code, _, errOut = eskit(t, "migrate", "status", "-postgres-url", "postgres://postgres@127.0.0.1:1/x?connect_timeout=2")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "cannot reach PostgreSQL")

	code, _, errOut = eskit(t, "migrate", "-schema", "Bad-Name")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "schema")
}
