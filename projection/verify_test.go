package projection_test

import (
	"context"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/projection"
)

// What JetStream holds is not trusted: messages published out of feed
// order, twice, or not at all are applied exactly once each, in stream
// order, with holes filled from the store — including a stream's last
// events that are never delivered, which the verification against the feed
// finds.
func TestLiveVerifiesDeliveryAgainstTheStore(t *testing.T) {
	for _, partitions := range []int{1, 3} {
		t.Run("partitions="+strconv.Itoa(partitions), func(t *testing.T) {
			rdb, prefix := testsvc.Redis(t)
			store := newMemstore()
			b := newBroker(t)
			acc := newAccounts(t, "accounts")
			acc.partitions = partitions
			r, err := projection.NewRunner(rdb, store, []projection.Projection{acc},
				fastOpts(t, prefix, projection.WithJetStream(b.js, b.stream), projection.WithBatchSize(50),
					projection.WithVerifyInterval(200*time.Millisecond))...)
			require.NoError(t, err)
			start(t, r)
			waitHead(t, r, "accounts", store) // the (empty) first build is done

			appendEvents(t, store, acc.reg, streamNames(12), 600)
			recs := allRecords(t, store)
			rng := rand.New(rand.NewPCG(1, uint64(partitions)))
			var sent []eventstore.Record
			for i, rec := range recs {
				switch {
				case i%17 == 3:
					// a hole: never published
				case rec.StreamID == "acct-5" && rec.Version > 45:
					// the stream's last events never arrive
				default:
					sent = append(sent, rec)
					if i%11 == 0 {
						sent = append(sent, rec) // a duplicate
					}
				}
			}
			// Out of order: shuffle inside windows of 40 messages, and send a
			// late copy of some early records at the end.
			for i := 0; i < len(sent); i += 40 {
				w := sent[i:min(i+40, len(sent))]
				rng.Shuffle(len(w), func(a, b int) { w[a], w[b] = w[b], w[a] })
			}
			sent = append(sent, recs[:30]...)
			b.publish(t, sent)

			head := testsvc.SettledHead(t, store)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			require.NoError(t, r.WaitFor(ctx, "accounts", head))
			ns, err := r.Namespace(ctx, "accounts")
			require.NoError(t, err)
			eventually(t, 10*time.Second, "the undelivered tail applied from the store", func() bool {
				return modelOf(t, rdb, ns)["history:acct-5"] == expected(recs)["history:acct-5"]
			})
			require.Equal(t, expected(recs), modelOf(t, rdb, ns), "the read model is the fold of the store")

			// Every record was applied once (nothing failed, so one apply per
			// record) and its side effect fired once.
			counts := map[eventstore.Position]int{}
			for _, a := range acc.applies() {
				counts[a.position]++
			}
			for _, rec := range recs {
				require.Equal(t, 1, counts[rec.Position], "applies of %s v%d", rec.StreamID, rec.Version)
			}
			effects := effectsAfter(t, acc, recs)
			for _, rec := range recs {
				require.Equal(t, 1, effects[rec.ID], "side effects of %s v%d", rec.StreamID, rec.Version)
			}
		})
	}
}

// modelOf reads a projection's read model over all its partitions, in the
// form expected returns: the per-partition balance hashes and counts are
// combined.
func modelOf(t testing.TB, rdb redis.UniversalClient, ns projection.Namespace) map[string]string {
	t.Helper()
	out := map[string]string{}
	var balances []string
	count := 0
	for _, p := range ns.All() {
		for k, v := range dump(t, rdb, p) {
			switch k {
			case "balance":
				balances = append(balances, strings.Split(strings.TrimPrefix(v, "hash:"), ",")...)
			case "count":
				n, err := strconv.Atoi(v)
				require.NoError(t, err)
				count += n
			default:
				out[k] = v
			}
		}
	}
	if count > 0 {
		out["count"] = strconv.Itoa(count)
	}
	if len(balances) > 0 {
		slices.Sort(balances)
		out["balance"] = "hash:" + strings.Join(balances, ",")
	}
	return out
}
