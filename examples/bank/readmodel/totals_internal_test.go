package readmodel

import (
	"math"
	"math/big"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/internal/infra/embedded"
	"github.com/eskit/eskit/internal/infra/testsvc"
)

var edges = []int64{0, 1, -1, moneyUnit - 1, moneyUnit, moneyUnit + 1, -moneyUnit, -moneyUnit - 1,
	2*moneyUnit + 3, math.MaxInt64, math.MinInt64, math.MaxInt64 - 1, math.MinInt64 + 1}

func TestMoneyUnit(t *testing.T) {
	require.Equal(t, strconv.FormatInt(moneyUnit, 10), moneyUnitDec, "the script's literal is the Go unit")
	require.Less(t, 2*moneyUnit, int64(1)<<53, "every number the script handles is an exact double")
}

// plus and minus split any int64 exactly, with a low part below the unit.
func TestChangeSplit(t *testing.T) {
	unit := big.NewInt(moneyUnit)
	value := func(c change) *big.Int {
		return new(big.Int).Add(new(big.Int).Mul(big.NewInt(c.hi), unit), big.NewInt(c.lo))
	}
	for _, n := range edges {
		p, m := plus("f", n), minus("f", n)
		require.Equal(t, big.NewInt(n), value(p), "plus %d", n)
		require.Equal(t, new(big.Int).Neg(big.NewInt(n)), value(m), "minus %d", n)
		for _, c := range []change{p, m} {
			require.Less(t, c.lo, moneyUnit)
			require.Greater(t, c.lo, -moneyUnit)
		}
	}
}

// moneyLua keeps exact totals whatever the int64 deltas, on Redis and on
// miniredis (gopher-lua, the embedded mode's), with every low part in
// [0, moneyUnit) after every call.
func TestMoneyScriptExact(t *testing.T) {
	for name, server := range RedisServersForTest("t:") {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			rdb, prefix := server(t)
			cur, hash := prefix+"currency", prefix+"money"
			require.NoError(t, rdb.Set(ctx, cur, "EUR", 0).Err())

			r := rand.New(rand.NewPCG(1, 2))
			var deltas []int64
			for range 20 {
				deltas = append(deltas, edges...)
			}
			for range 500 {
				deltas = append(deltas, int64(r.Uint64()))
			}
			r.Shuffle(len(deltas), func(i, j int) { deltas[i], deltas[j] = deltas[j], deltas[i] })

			wantHeld, wantIn := new(big.Int), new(big.Int)
			for _, d := range deltas {
				changes := []change{plus(fieldHeld, d), minus(fieldInFlight, d)}
				require.NoError(t, rdb.Eval(ctx, moneyLua, []string{cur, hash}, moneyArgs(changes)...).Err(), "delta %d", d)
				wantHeld.Add(wantHeld, big.NewInt(d))
				wantIn.Sub(wantIn, big.NewInt(d))

				vals, err := rdb.HGetAll(ctx, hash).Result()
				require.NoError(t, err)
				for _, f := range []string{"EUR:" + fieldHeld, "EUR:" + fieldInFlight} {
					low, err := strconv.ParseInt(vals[f], 10, 64)
					require.NoError(t, err)
					require.True(t, low >= 0 && low < moneyUnit, "%s = %d after %d", f, low, d)
				}
				sums := moneySums{}
				require.NoError(t, sums.add(vals))
				m := sums.money()["EUR"]
				require.Equal(t, wantHeld.String(), m.Held.String(), "after %d", d)
				require.Equal(t, wantIn.String(), m.InFlight.String(), "after %d", d)
			}
		})
	}
}

// RedisServersForTest returns the servers the read models are tested on:
// the real Redis (with a test's own key prefix) and miniredis, the
// embedded mode's (with prefix). Each gives a client and its key prefix,
// and cleans up after the test.
func RedisServersForTest(prefix string) map[string]func(t *testing.T) (redis.UniversalClient, string) {
	return map[string]func(t *testing.T) (redis.UniversalClient, string){
		"redis": func(t *testing.T) (redis.UniversalClient, string) {
			return testsvc.Redis(t)
		},
		"miniredis": func(t *testing.T) (redis.UniversalClient, string) {
			rs, err := embedded.StartRedis("")
			require.NoError(t, err)
			t.Cleanup(rs.Close)
			rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
			t.Cleanup(func() { _ = rdb.Close() })
			return rdb, prefix
		},
	}
}
