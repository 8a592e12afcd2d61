package natsevent_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/natsevent"
)

func TestMsgRoundTrip(t *testing.T) {
	t.Parallel()
	keys := rapid.OneOf(rapid.SampledFrom([]string{
		eventstore.MetaCorrelationID, eventstore.MetaCausationID, eventstore.MetaContentType,
		eventstore.MetaSchemaVersion, "tenant", "trace\n\"id\"",
	}), rapid.String())
	rapid.Check(t, func(t *rapid.T) {
		rec := eventstore.Record{
			Event: eventstore.Event{
				ID:   eventstore.NewEventID(),
				Type: rapid.StringN(1, 20, -1).Draw(t, "type"),
				Data: rapid.SliceOf(rapid.Byte()).Draw(t, "data"),
			},
			StreamID:   rapid.StringN(1, 30, -1).Draw(t, "stream"),
			Version:    rapid.Int64Range(1, 1<<40).Draw(t, "version"),
			Position:   eventstore.Position{Tx: rapid.Uint64().Draw(t, "tx"), Seq: rapid.Uint64().Draw(t, "seq")},
			RecordedAt: time.Unix(0, rapid.Int64Range(0, 1<<62).Draw(t, "at")).UTC(),
		}
		if md := rapid.MapOf(keys, rapid.String()).Draw(t, "metadata"); len(md) > 0 {
			rec.Metadata = md
		}
		m := natsevent.NewMsg("p", rec)
		got, err := natsevent.DecodeMsg(m.Subject, m.Header, m.Data)
		require.NoError(t, err)
		if len(rec.Data) == 0 {
			got.Data = rec.Data
		}
		require.Equal(t, rec, got)
	})
}

func TestDecodeMsgRejectsMismatch(t *testing.T) {
	t.Parallel()
	rec := eventstore.Record{Event: eventstore.Event{ID: eventstore.NewEventID(), Type: "T"}, StreamID: "a-1", Version: 1}
	m := natsevent.NewMsg("p", rec)
	m.Header.Set(natsevent.HeaderMetadata, "not base64!")
	_, err := natsevent.DecodeMsg(m.Subject, m.Header, m.Data)
	require.Error(t, err)
	m = natsevent.NewMsg("p", rec)
	m.Header.Del(natsevent.HeaderMsgID)
	_, err = natsevent.DecodeMsg(m.Subject, m.Header, m.Data)
	require.Error(t, err)
}
