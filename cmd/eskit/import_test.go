package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
)

// eskit import loads streams from JSON lines in batches of whole streams,
// showing progress (plain lines off a terminal), and round-trips what
// `eskit streams show -json` prints; bad input names its line, and what
// was imported before it stays.
func TestImportCommand(t *testing.T) {
	url, _, store := newCommandStore(t)
	ctx := context.Background()
	var b strings.Builder
	for s := range 5 {
		for v := 1; v <= 4; v++ {
			fmt.Fprintf(&b, `{"stream_id":"order-%d","version":%d,"type":"order.Step","data":{"step":%d},"metadata":{"k":"v"}}`+"\n", s, v, v)
		}
	}
	b.WriteString(`{"stream_id":"blob-1","type":"blob.Put","data_base64":"AAEC/w=="}` + "\n")
	file := filepath.Join(t.TempDir(), "events.jsonl")
	require.NoError(t, os.WriteFile(file, []byte(b.String()), 0o644))

	code, out, errOut := eskit(t, "import", file, "-postgres-url", url, "-batch", "6", "-progress", "1ns")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "imported 21 events of 6 streams\n", out)
	require.Contains(t, errOut, "importing "+file+": ")
	require.Contains(t, errOut, fmt.Sprintf("%d/%d bytes (100.0%%)", b.Len(), b.Len()))
	require.NotContains(t, errOut, "\r", "no bar drawn off a terminal")
	recs, err := eventstore.Collect(store.ReadStream(ctx, "order-3", 1))
	require.NoError(t, err)
	require.Len(t, recs, 4)
	require.JSONEq(t, `{"step":4}`, string(recs[3].Data))
	require.Equal(t, "v", recs[0].Metadata.Get("k"))
	blob, err := eventstore.Collect(store.ReadStream(ctx, "blob-1", 1))
	require.NoError(t, err)
	require.Equal(t, []byte{0, 1, 2, 0xff}, blob[0].Data)

	// What streams show -json prints imports into another store as it was.
	code, shown, errOut := eskit(t, "streams", "show", "order-3", "-json", "-postgres-url", url)
	require.Equal(t, 0, code, errOut)
	url2, _, store2 := newCommandStore(t)
	file2 := filepath.Join(t.TempDir(), "shown.jsonl")
	require.NoError(t, os.WriteFile(file2, []byte(shown), 0o644))
	code, out, errOut = eskit(t, "import", file2, "-postgres-url", url2)
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "imported 4 events of 1 streams\n", out)
	again, err := eventstore.Collect(store2.ReadStream(ctx, "order-3", 1))
	require.NoError(t, err)
	for i := range recs {
		require.Equal(t, recs[i].ID, again[i].ID)
		require.Equal(t, recs[i].Type, again[i].Type)
		require.JSONEq(t, string(recs[i].Data), string(again[i].Data))
	}

	for _, tc := range []struct{ name, input, want string }{
		{"malformed", `{"stream_id":"a-1","type":"x","data":{}}` + "\n" + `{"stream_id":`, "line 2: not a record"},
		{"no type", `{"stream_id":"a-1","data":{}}`, "line 1: a record needs stream_id and type"},
		{"out of order", `{"stream_id":"a-1","version":2,"type":"x","data":{}}`, "version 2 where 1 comes next"},
		{"stream again", `{"stream_id":"a-1","type":"x","data":{}}` + "\n" + `{"stream_id":"b-1","type":"x","data":{}}` + "\n" +
			`{"stream_id":"a-1","type":"x","data":{}}`, `line 3: stream "a-1" appears again`},
		{"existing stream", `{"stream_id":"order-1","type":"x","data":{}}`, "concurrency conflict"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "bad.jsonl")
			require.NoError(t, os.WriteFile(f, []byte(tc.input), 0o644))
			code, _, errOut := eskit(t, "import", f, "-postgres-url", url)
			require.Equal(t, 1, code)
			require.Contains(t, errOut, tc.want)
			require.Contains(t, errOut, "imported before")
		})
	}
}
