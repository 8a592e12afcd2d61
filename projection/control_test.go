package projection_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/projection"
)

// TestControlRequests: another process (a Reader, as the operator CLI uses)
// asks the active runner to retry and skip parked records and to rebuild.
func TestControlRequests(t *testing.T) {
	rdb, prefix := testsvc.Redis(t)
	store := newMemstore()
	acc := newAccounts(t, "accounts")
	ctx := context.Background()
	ops := projection.NewReader(rdb, prefix, store)

	// No runner has ever served the projection: it is unknown.
	nctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err := ops.Request(nctx, "accounts", projection.ControlRequest{Op: projection.OpRetry})
	cancel()
	require.ErrorIs(t, err, projection.ErrUnknownProjection)
	_, err = ops.Request(ctx, "accounts", projection.ControlRequest{Op: "explode"})
	require.Error(t, err)

	r, err := projection.NewRunner(rdb, store, []projection.Projection{acc}, fastOpts(t, prefix)...)
	require.NoError(t, err)
	start(t, r)
	eventually(t, 10*time.Second, "runner active", func() bool { return r.Active("accounts") })
	names, err := ops.Projections(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"accounts"}, names)

	appendOne(t, store, acc.reg, "acct-a", Deposited{Amount: 1})
	bad := newEvent(t, acc.reg, Deposited{Amount: 3})
	acc.setFail(bad.ID, errors.New("boom"))
	_, err = store.Append(ctx, "acct-a", eventstore.Any, bad)
	require.NoError(t, err)
	appendOne(t, store, acc.reg, "acct-a", Deposited{Amount: 4})
	appendOne(t, store, acc.reg, "acct-b", Deposited{Amount: 5})
	waitHead(t, r, "accounts", store)

	parked, err := ops.Parked(ctx, "accounts")
	require.NoError(t, err)
	require.Len(t, parked, 2)

	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	reply, err := ops.Request(rctx, "accounts", projection.ControlRequest{Op: projection.OpRetry})
	require.NoError(t, err)
	require.Equal(t, 0, reply.Applied)
	require.Equal(t, 2, reply.Remaining)

	acc.setFail(bad.ID, nil)
	reply, err = ops.Request(rctx, "accounts", projection.ControlRequest{Op: projection.OpRetry, Streams: []string{"acct-a"}})
	require.NoError(t, err)
	require.Equal(t, 2, reply.Applied)
	parked, err = ops.Parked(ctx, "accounts")
	require.NoError(t, err)
	require.Empty(t, parked)

	before, err := ops.Namespace(ctx, "accounts")
	require.NoError(t, err)
	want := dump(t, rdb, before)
	reply, err = ops.Request(rctx, "accounts", projection.ControlRequest{Op: projection.OpRebuild})
	require.NoError(t, err)
	require.Equal(t, before.Version+1, reply.Version)
	after, err := ops.Namespace(ctx, "accounts")
	require.NoError(t, err)
	require.Equal(t, want, dump(t, rdb, after), "the rebuilt model equals the one it replaced")

	// Nothing is parked any more: skipping drops nothing.
	reply, err = ops.Request(rctx, "accounts", projection.ControlRequest{Op: projection.OpSkip})
	require.NoError(t, err)
	require.Equal(t, 0, reply.Skipped)
}
