package outbox_test

import (
	"context"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/memstore"
	"github.com/eskit/eskit/natsevent"
	"github.com/eskit/eskit/outbox"
)

// hostileValues imitate or disturb NATS control headers, or lose their
// edge spaces in header encoding.
var hostileValues = []string{
	"Nats-Msg-Id",
	"Nats-Msg-Id: 00000000-0000-0000-0000-000000000000",
	"x\r\nNats-Msg-Id: dup\r\n",
	"Nats-Expected-Last-Msg-Id: nope",
	"Nats-Expected-Stream: OTHER",
	"Nats-Rollup: all",
	"NATS/1.0 503\r\n\r\n",
	" leading space", "trailing space ", "  ", "\t tab",
	"ünïcødé ✓", "a\x00b", "",
}

// No value a user controls can reach a broker control header: records
// whose stream IDs, types and metadata hold hostile text go through the
// relay to a real server (in-process, and Debian's 2.9.10 with
// ESKIT_NATS_URL); the stream then holds each record once, in feed order,
// decoding to exactly what the store holds; publishing the messages again
// is absorbed as duplicates, and the expected-last chain still holds.
func TestHostileValuesCannotReachControlHeaders(t *testing.T) {
	t.Run("in-process", func(t *testing.T) { testHostileValues(t, newBroker(t)) })
	t.Run("external", func(t *testing.T) { testHostileValues(t, externalBroker(t)) })
}

func testHostileValues(t *testing.T, b *broker) {
	ctx := context.Background()
	pool := newDB(t)
	store := memstore.New()
	for i, v := range hostileValues {
		var md eventstore.Metadata
		if v != "" && !strings.ContainsRune(v, 0) {
			md = eventstore.Metadata{}
			md[eventstore.MetaCorrelationID] = v
			md[eventstore.MetaCausationID] = v
			md[eventstore.MetaContentType] = v
			md["traceparent"] = v
			md["tracestate"] = v
			md["tenant "+v] = v
		}
		stream := "acct-" + strings.Map(func(r rune) rune {
			if unicode.IsControl(r) {
				return -1
			}
			return r
		}, v) + " -" + string(rune('a'+i)) + " " // edge and inner spaces
		typ := " " + strings.Map(func(r rune) rune {
			if unicode.IsControl(r) {
				return -1
			}
			return r
		}, v) + "T "
		for range 2 {
			_, err := store.Append(ctx, stream, eventstore.Any, eventstore.Event{
				ID: eventstore.NewEventID(), Type: typ, Data: []byte(`{}`), Metadata: md,
			})
			require.NoError(t, err, "value %q", v)
		}
	}
	feed := feedAll(t, store)
	r, err := outbox.NewRelay(store, pool, b.js, fastOpts(t, b)...)
	require.NoError(t, err)
	stop := runRelay(t, r)
	eventually(t, 30*time.Second, "relay to catch up", caughtUp(t, r, store))
	stop()
	requireSameFeed(t, feed, b.records(t))

	// Every message again: de-duplicated by its ID, whatever its metadata.
	for _, rec := range feed {
		ack, err := b.js.PublishMsg(ctx, natsevent.NewMsg(b.prefix, rec))
		require.NoError(t, err)
		require.True(t, ack.Duplicate, "re-publish of %s v%d", rec.StreamID, rec.Version)
	}
	// The expected-last chain is honoured on a message with hostile
	// metadata: a wrong predecessor is refused.
	last := feed[len(feed)-1]
	m := natsevent.NewMsg(b.prefix, eventstore.Record{Event: eventstore.Event{ID: eventstore.NewEventID(), Type: "T",
		Metadata: eventstore.Metadata{"x": "Nats-Expected-Last-Msg-Id: " + last.ID.String()}}, StreamID: "acct-z", Version: 1})
	m.Header.Set(jetstream.ExpectedLastMsgIDHeader, eventstore.NewEventID().String())
	_, err = b.js.PublishMsg(ctx, m)
	require.Error(t, err, "a wrong expected last message ID is refused")
	requireSameFeed(t, feed, b.records(t))
}

// Header values the relay writes never contain a control header's name,
// and every record round-trips exactly even when header values lose their
// edge spaces on the way (as nats.go's parser trims them).
func FuzzMsgHeaders(f *testing.F) {
	for _, v := range hostileValues {
		f.Add("acct-"+v, "T"+v, "k", v)
	}
	f.Fuzz(func(t *testing.T, stream, typ, key, value string) {
		if stream == "" || typ == "" {
			return
		}
		rec := eventstore.Record{
			Event:    eventstore.Event{ID: eventstore.NewEventID(), Type: typ, Data: []byte("x")},
			StreamID: stream, Version: 3, Position: eventstore.Position{Tx: 9, Seq: 4},
			RecordedAt: time.Date(2026, 12, 1, 0, 0, 0, 5, time.UTC),
		}
		if key != "" {
			rec.Metadata = eventstore.Metadata{key: value, eventstore.MetaCorrelationID: value}
		}
		for _, s := range []string{key, value, typ} {
			if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
				return // the store refuses it; nothing to relay
			}
		}
		m := natsevent.NewMsg("p", rec)
		wire := nats.Header{}
		for k, vs := range m.Header {
			for _, v := range vs {
				if strings.Contains(strings.ToLower(v), "nats-") || strings.ContainsAny(v, "\r\n") {
					t.Fatalf("header %s = %q could reach a control header", k, v)
				}
				wire.Add(k, strings.TrimSpace(v))
			}
		}
		got, err := natsevent.DecodeMsg(m.Subject, wire, m.Data)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if got.StreamID != rec.StreamID || got.Type != rec.Type || len(got.Metadata) != len(rec.Metadata) {
			t.Fatalf("round trip: got %+v, want %+v", got, rec)
		}
		for k, v := range rec.Metadata {
			if got.Metadata[k] != v {
				t.Fatalf("metadata %q: got %q, want %q", k, got.Metadata[k], v)
			}
		}
	})
}
