package aggtest_test

import (
	"math"
	"os"
	"testing"

	"pgregory.net/rapid"
)

func nested[C any](g *rapid.Generator[C], inner, outer, max int) *rapid.Generator[[]C] { return nestedMin(g, inner, 0, outer, max) }
func nestedMin[C any](g *rapid.Generator[C], inner, omin, outer, max int) *rapid.Generator[[]C] {
	return rapid.Map(rapid.SliceOfN(rapid.SliceOfN(g, 1, inner), omin, outer), func(chunks [][]C) []C {
		var all []C
		for _, c := range chunks {
			all = append(all, c...)
		}
		if len(all) > max {
			all = all[:max]
		}
		return all
	})
}

func TestExperiment(t *testing.T) {
	if os.Getenv("EXP") == "" {
		t.Skip()
	}
	wc := func(a, l int64) *rapid.Generator[WalletCommand] {
		amount := rapid.Int64Range(1, a)
		return rapid.OneOf(
			rapid.Map(rapid.Int64Range(0, l), func(l int64) WalletCommand { return OpenWallet{Limit: l} }),
			rapid.Map(amount, func(a int64) WalletCommand { return Deposit{Amount: a} }),
			rapid.Map(amount, func(a int64) WalletCommand { return Withdraw{Amount: a} }),
			rapid.Map(rapid.Int64Range(0, l), func(l int64) WalletCommand { return SetLimit{Limit: l} }),
			rapid.Just[WalletCommand](Freeze{}),
			rapid.Just[WalletCommand](Unfreeze{}),
		)
	}
	gens := map[string]*rapid.Generator[[]WalletCommand]{}
	g := wc(500, 500)
	gens["old"] = rapid.SliceOfN(g, 0, 50)
	gens["n20x10"] = nested(g, 20, 10, 50)
	gens["m1 n10x10"] = nestedMin(g, 10, 1, 10, 50)
	gens["m1 n20x10"] = nestedMin(g, 20, 1, 10, 50)
	gens["m1 n15x10"] = nestedMin(g, 15, 1, 10, 50)
	gens["m1 n25x10"] = nestedMin(g, 25, 1, 10, 50)
	gens["m1 n50x50"] = nestedMin(g, 50, 1, 50, 50)
	gens["m1 n20x10 max100"] = nestedMin(g, 20, 1, 10, 100)
	spec := walletSpec(true)
	const N = 20000
	for name, g := range gens {
		var fails, short, mid, full, total int
		for i := 0; i < N; i++ {
			cmds := g.Example(i)
			total += len(cmds)
			switch {
			case len(cmds) < 10:
				short++
			case len(cmds) >= 50:
				full++
			default:
				mid++
			}
			if spec.VerifyInvariants(cmds) != nil {
				fails++
			}
		}
		q := float64(fails) / N
		t.Logf("%-18s mean %.1f  <10 %.0f%%  10-49 %.0f%%  50 %.0f%%  q=%.4f  P100=%.3f P1000=%.6f miss1000=%.2g",
			name, float64(total)/N, 100*float64(short)/N, 100*float64(mid)/N, 100*float64(full)/N, q,
			1-math.Pow(1-q, 100), 1-math.Pow(1-q, 1000), math.Pow(1-q, 1000))
	}
}
