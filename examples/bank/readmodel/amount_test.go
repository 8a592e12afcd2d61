package readmodel_test

import (
	"encoding/json"
	"math"
	"math/big"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/examples/bank/readmodel"
)

func TestAmount(t *testing.T) {
	huge := "-123456789012345678901234567890"
	a, err := readmodel.ParseAmount(huge)
	require.NoError(t, err)
	require.Equal(t, huge, a.String())
	require.Equal(t, -1, a.Sign())
	_, fits := a.Int64()
	require.False(t, fits)

	// Zero, however it is made, is the zero value.
	zero, err := readmodel.ParseAmount("-000")
	require.NoError(t, err)
	require.Equal(t, readmodel.Amount{}, zero)
	require.Equal(t, readmodel.Amount{}, readmodel.AmountOf(0))
	require.Equal(t, readmodel.Amount{}, a.Sub(a))
	require.Equal(t, "0", readmodel.Amount{}.String())

	top := readmodel.AmountOf(math.MaxInt64)
	n, fits := top.Int64()
	require.True(t, fits)
	require.Equal(t, int64(math.MaxInt64), n)
	beyond := top.Add(readmodel.AmountOf(1))
	require.Equal(t, "9223372036854775808", beyond.String())
	require.Equal(t, 1, beyond.Cmp(top))
	require.Equal(t, new(big.Int).Lsh(big.NewInt(1), 63), beyond.Big())
	_, fits = beyond.Int64()
	require.False(t, fits)

	for _, bad := range []string{"", "1.5", "1e3", "x", " 1"} {
		_, err := readmodel.ParseAmount(bad)
		require.Error(t, err, "%q", bad)
	}
}

// Amounts are JSON numbers with every digit, and decode back exactly.
func TestAmountJSON(t *testing.T) {
	m := readmodel.Money{Held: readmodel.AmountOf(math.MaxInt64).Add(readmodel.AmountOf(math.MaxInt64)), Withdrawn: readmodel.AmountOf(-5)}
	raw, err := json.Marshal(m)
	require.NoError(t, err)
	require.JSONEq(t, `{"held":18446744073709551614,"in_flight":0,"deposited":0,"withdrawn":-5}`, string(raw))
	require.Contains(t, string(raw), `"held":18446744073709551614`)
	var back readmodel.Money
	require.NoError(t, json.Unmarshal(raw, &back))
	require.Equal(t, m, back)

	for _, bad := range []string{`{"held":1.5}`, `{"held":1e20}`, `{"held":"5"}`} {
		require.Error(t, json.Unmarshal([]byte(bad), &back), bad)
	}
}
