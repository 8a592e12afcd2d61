package pgstore_test

import (
	"context"
	"testing"

	"github.com/eskit/eskit/internal/require"

	"github.com/eskit/eskit/eventstore"
)

func TestListStreams(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	for _, id := range []string{"account-2", "account-1", "account", "accounts", "order-1", "account-1.x *>"} {
		for range 2 {
			_, err := s.Append(ctx, id, eventstore.Any, eventstore.Event{Type: "t", Data: []byte(`{}`)})
			require.NoError(t, err)
		}
	}
	ids := func(prefix, after string, limit int) []string {
		t.Helper()
		got, err := s.ListStreams(ctx, prefix, after, limit)
		require.NoError(t, err)
		out := []string{}
		for _, si := range got {
			require.EqualValues(t, 2, si.Version, si.StreamID)
			require.False(t, si.LastRecordedAt.IsZero())
			out = append(out, si.StreamID)
		}
		return out
	}
	require.Equal(t, []string{"account", "account-1", "account-1.x *>", "account-2", "accounts"}, ids("account", "", 0))
	require.Equal(t, []string{"account-1", "account-1.x *>", "account-2"}, ids("account-", "", 10))
	require.Equal(t, []string{"account-1", "account-1.x *>"}, ids("account-", "", 2))
	require.Equal(t, []string{"account-2"}, ids("account-", "account-1.x *>", 2))
	require.Equal(t, []string{"order-1"}, ids("o", "", 10))
	require.Equal(t, []string{}, ids("zzz", "", 10))
	require.Len(t, ids("", "", 100), 6)
}
