package outbox_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/natsevent"
	"github.com/eskit/eskit/telemetry"
)

// The trace context of an event travels in the W3C traceparent header (and
// in the encoded metadata), and comes back as metadata.
func TestMsgCarriesTraceContext(t *testing.T) {
	const parent = "00-0102030405060708090a0b0c0d0e0f10-0102030405060708-01"
	rec := eventstore.Record{
		Event: eventstore.Event{ID: uuid.New(), Type: "Deposited", Data: []byte(`{}`), Metadata: eventstore.Metadata{
			telemetry.MetaTraceParent: parent,
			telemetry.MetaTraceState:  "vendor=x",
			"tenant":                  "t1",
		}},
		StreamID: "account-1", Version: 3, Position: eventstore.Position{Tx: 7, Seq: 9},
		RecordedAt: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC),
	}
	msg := natsevent.NewMsg("ev", rec)
	require.Equal(t, parent, msg.Header.Get(natsevent.HeaderTraceParent))
	require.Empty(t, msg.Header.Get("tracestate"), "free text stays in the encoded metadata")

	got, err := natsevent.DecodeMsg(msg.Subject, msg.Header, msg.Data)
	require.NoError(t, err)
	require.Equal(t, rec.Metadata, got.Metadata)
}
