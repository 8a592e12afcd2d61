package projection_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/projection"
)

// typedCounter counts the Deposited records a Typed apply saw.
func typedCounter(reg *eventstore.Registry, opts ...projection.TypedOption) projection.ApplyFunc {
	return projection.Typed(reg, func(ctx context.Context, b *projection.Batch, rec eventstore.Record, ev Deposited) error {
		b.Pipe().HIncrBy(ctx, b.Key("balance"), rec.StreamID, ev.Amount)
		return nil
	}, opts...)
}

// Typed parks a record whose type is not registered (a forgotten Register
// must not give an empty read model), with an error naming the type;
// registered types that are not an E stay ignored.
func TestTypedParksUnregisteredType(t *testing.T) {
	rdb, prefix := testsvc.Redis(t)
	store := newMemstore()
	reg := newRegistry(t)
	ctx := context.Background()

	// The Typed func alone: a permanent error naming the type.
	rec := eventstore.Record{Event: eventstore.Event{ID: eventstore.NewEventID(), Type: "wallet.Forgotten", Data: []byte(`{}`)}, StreamID: "x", Version: 1}
	err := typedCounter(reg)(ctx, nil, rec)
	require.Error(t, err)
	require.True(t, projection.IsPermanent(err))
	require.ErrorIs(t, err, eventstore.ErrUnknownEventType)
	var ue *projection.UnregisteredTypeError
	require.True(t, errors.As(err, &ue))
	require.Equal(t, "wallet.Forgotten", ue.Type)
	require.Contains(t, err.Error(), `"wallet.Forgotten"`)
	require.NoError(t, typedCounter(reg, projection.IgnoreUnregistered())(ctx, nil, rec))

	// Through a runner: parked, visible in Parked and Status.
	_, err = store.Append(ctx, "acct-a", eventstore.Any, eventstore.Event{ID: eventstore.NewEventID(), Type: "wallet.Forgotten", Data: []byte(`{}`)})
	require.NoError(t, err)
	appendOne(t, store, reg, "acct-b", Withdrawn{Amount: 3}) // registered, not a Deposited: ignored
	appendOne(t, store, reg, "acct-b", Deposited{Amount: 5})

	strict := projection.New("strict", typedCounter(reg))
	lenient := projection.New("lenient", typedCounter(reg, projection.IgnoreUnregistered()))
	r, err := projection.NewRunner(rdb, store, []projection.Projection{strict, lenient}, fastOpts(t, prefix)...)
	require.NoError(t, err)
	start(t, r)
	waitHead(t, r, "strict", store)
	waitHead(t, r, "lenient", store)

	parked, err := r.Parked(ctx, "strict")
	require.NoError(t, err)
	require.Len(t, parked, 1)
	require.Equal(t, "wallet.Forgotten", parked[0].Record.Type)
	require.Contains(t, parked[0].Error, `event type "wallet.Forgotten" is not registered`)
	require.Equal(t, 1, parked[0].Attempts, "permanent: no retries")
	st, err := r.Status(ctx, "strict")
	require.NoError(t, err)
	require.Equal(t, 1, st.Parked)
	require.Contains(t, st.LastError, "wallet.Forgotten")

	parked, err = r.Parked(ctx, "lenient")
	require.NoError(t, err)
	require.Empty(t, parked)
	st, err = r.Status(ctx, "lenient")
	require.NoError(t, err)
	require.Zero(t, st.Parked)

	for _, name := range []string{"strict", "lenient"} {
		ns, err := r.Namespace(ctx, name)
		require.NoError(t, err)
		got, err := rdb.HGetAll(ctx, ns.ForStream("acct-b").Key("balance")).Result()
		require.NoError(t, err)
		require.Equal(t, map[string]string{"acct-b": "5"}, got, name)
	}
}
