package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/internal/infra/testsvc"
)

// TestTailLines: `eskit tail` prints one line per record, with no blank
// line between records.
func TestTailLines(t *testing.T) {
	url := testsvc.Database(t)
	code, _, errOut := eskit(t, "migrate", "-postgres-url", url)
	require.Equal(t, 0, code, errOut)
	ctx := context.Background()
	store, err := pgstore.New(ctx, testsvc.PoolFor(t, url))
	require.NoError(t, err)
	t.Cleanup(store.Close)
	streams := []string{"account-1", "order.1 *>", "account-3", "account-2"}
	for _, id := range streams {
		_, err := store.Append(ctx, id, eventstore.NoStream,
			eventstore.Event{Type: "Opened", Data: []byte("{\n  \"owner\": \"ann\"\n}")},
			eventstore.Event{Type: "Deposited", Data: []byte(`{"amount": 5}`)})
		require.NoError(t, err)
	}
	testsvc.SettledHead(t, store) // the feed shows every commit
	feed, err := store.ReadAll(ctx, eventstore.Position{}, 100)
	require.NoError(t, err)
	require.Len(t, feed, 8)

	// Flags after -from's value and before -limit's: any order.
	code, out, errOut := eskit(t, "tail", "-from", "0-0", "-postgres-url", url, "-limit", "8")
	require.Equal(t, 0, code, errOut)
	require.True(t, strings.HasSuffix(out, "\n"))
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	require.Len(t, lines, 8, "one line per record:\n%s", out)
	for i, line := range lines {
		rec := feed[i]
		require.NotEmpty(t, strings.TrimSpace(line), "line %d", i)
		require.True(t, strings.HasPrefix(line, rec.Position.String()+"  "), "line %d: %q", i, line)
		require.Contains(t, line, "  "+rec.StreamID+"  ", "line %d", i)
		require.Contains(t, line, "  "+rec.Type+"  ", "line %d", i)
	}
	require.Contains(t, lines[0], `{"owner":"ann"}`)
	require.Contains(t, lines[1], `{"amount":5}`)

	// From the middle of the feed, with the limit first.
	code, out, errOut = eskit(t, "tail", "-limit", "2", "-postgres-url", url, "-from", feed[5].Position.String())
	require.Equal(t, 0, code, errOut)
	lines = strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	require.Len(t, lines, 2, out)
	require.True(t, strings.HasPrefix(lines[0], feed[6].Position.String()+"  "))
	require.True(t, strings.HasPrefix(lines[1], feed[7].Position.String()+"  "))
}

// A payload or name holding a line break is quoted: one record, one line.
func TestTailLineQuotesControlCharacters(t *testing.T) {
	rec := eventstore.Record{
		StreamID: "account-1", Version: 3, Position: eventstore.Position{Tx: 7, Seq: 9},
		RecordedAt: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC),
		Event: eventstore.Event{Type: "Note", Data: []byte("not\njson"),
			Metadata: eventstore.Metadata{eventstore.MetaContentType: "text/plain\nx"}},
	}
	require.Equal(t, `7-9  2026-12-01T10:00:00.000000Z  account-1  3  Note  "<8 bytes text/plain\nx>"`, tailLine(rec))
	rec.Data, rec.Metadata = []byte(`{"a": "b"}`), nil
	require.Equal(t, `7-9  2026-12-01T10:00:00.000000Z  account-1  3  Note  {"a":"b"}`, tailLine(rec))
}
