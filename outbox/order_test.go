package outbox_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/memstore"
	"github.com/eskit/eskit/outbox"
)

// When JetStream refuses one message but would store the next (here: a
// message over the stream's size limit), the relay must not store the later
// messages before it: every message expects its predecessor as the stream's
// last message ID, so the stream stays a prefix of the feed, in order. Once
// the limit is raised, the rest follows in feed order.
func TestRelayKeepsOrderWhenOneMessageIsRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := newBroker(t)
	s, err := b.js.Stream(ctx, b.stream)
	require.NoError(t, err)
	cfg := s.CachedInfo().Config
	cfg.MaxMsgSize = 4 << 10
	_, err = b.js.UpdateStream(ctx, cfg)
	require.NoError(t, err)

	store := memstore.New()
	small := func() eventstore.Event { return eventstore.Event{Type: "Small", Data: []byte(`{"n":1}`)} }
	big := eventstore.Event{Type: "Big", Data: append(append([]byte(`{"pad":"`), bytes.Repeat([]byte("x"), 8<<10)...), `"}`...)}
	for _, e := range []eventstore.Event{small(), small(), big, small(), small()} {
		_, err := store.Append(ctx, "acct-1", eventstore.Any, e)
		require.NoError(t, err)
	}
	_, err = store.Append(ctx, "acct-2", eventstore.Any, small(), small())
	require.NoError(t, err)

	r, err := outbox.NewRelay(store, nil, b.js, fastOpts(t, b, outbox.WithCheckpoints(outbox.NewMemoryCheckpoints()))...)
	require.NoError(t, err)
	runRelay(t, r)
	eventually(t, 20*time.Second, "the refusal to be retried", func() bool {
		st := r.Stats()
		return st.LastError != nil && st.Position.Seq >= 2
	})
	// Several retries later, JetStream still holds only what precedes the
	// refused message.
	time.Sleep(500 * time.Millisecond)
	feed := feedAll(t, store)
	require.Equal(t, feed[:2], b.records(t), "only the prefix before the refused message is stored")

	cfg.MaxMsgSize = 1 << 20
	_, err = b.js.UpdateStream(ctx, cfg)
	require.NoError(t, err)
	eventually(t, 20*time.Second, "the relay to catch up", caughtUp(t, r, store))
	requireSameFeed(t, feed, b.records(t))
}
