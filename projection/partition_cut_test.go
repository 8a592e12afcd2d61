package projection_test

import (
	"net/url"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/internal/netproxy"
	"github.com/eskit/eskit/projection"
)

// The active runner's link to Redis is cut (its connections stay open,
// nothing gets through) while a standby reaches everything: the standby
// takes the partition over within the lease TTL. The cut lasts several
// TTLs; once it heals, the cut-off runner commits nothing over the new
// one's work and stands by, and when the new one stops it takes the
// partition back. The read model is the fold of the store.
func TestRunnerCutOffFromRedisFailsOver(t *testing.T) {
	ctx := t.Context()
	rdb, prefix := testsvc.Redis(t)
	store := newMemstore()
	accA, accB := newAccounts(t, "accounts"), newAccounts(t, "accounts")
	appendEvents(t, store, accA.reg, streamNames(4), 100)

	u, err := url.Parse(testsvc.RedisURL())
	require.NoError(t, err)
	proxy := netproxy.Start(t, u.Host)
	u.Host = proxy.Addr()
	opt, err := redis.ParseURL(u.String())
	require.NoError(t, err)
	cutRDB := redis.NewClient(opt)
	t.Cleanup(func() { _ = cutRDB.Close() })

	a, err := projection.NewRunner(cutRDB, store, []projection.Projection{accA}, freezeRunnerOpts(t, prefix, "A")...)
	require.NoError(t, err)
	runA := start(t, a)
	waitHead(t, a, "accounts", store)
	b, err := projection.NewRunner(rdb, store, []projection.Projection{accB}, freezeRunnerOpts(t, prefix, "B")...)
	require.NoError(t, err)
	runB := start(t, b)
	time.Sleep(runnerFreezeTTL)
	require.False(t, b.Active("accounts"), "the standby took over from a live runner")

	proxy.Freeze()
	t.Cleanup(proxy.Thaw) // before the runners stop
	cut := time.Now()
	appendEvents(t, store, accA.reg, streamNames(4), 40)
	requireTakeover(t, b, cut, "the cut")
	waitHead(t, b, "accounts", store)

	time.Sleep(time.Until(cut.Add(5 * runnerFreezeTTL)))
	proxy.Thaw()
	appendEvents(t, store, accA.reg, streamNames(4), 20)
	waitHead(t, b, "accounts", store)
	require.False(t, a.Active("accounts"), "the healed runner took over from a live one")

	runB.stop()
	eventually(t, runnerFreezeTTL+10*time.Second, "the healed runner to take the partition back", func() bool { return a.Active("accounts") })
	appendEvents(t, store, accA.reg, streamNames(4), 10)
	waitHead(t, a, "accounts", store)
	ns, err := a.Namespace(ctx, "accounts")
	require.NoError(t, err)
	require.Equal(t, expected(allRecords(t, store)), dump(t, rdb, ns))
	runA.stop()
}
