package aggtest_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/eskit/eskit/aggregate/aggtest"
)

// TestWalletProperties is the property spec of the README's section on
// aggtest, word for word (TestREADMEShowsWalletProperties keeps the two
// alike); the wallet is in wallet_test.go.
func TestWalletProperties(t *testing.T) {
	amount := rapid.Int64Range(1, 500)
	limit := rapid.Int64Range(0, 500)
	aggtest.Check(t, aggtest.Spec[Wallet, WalletCommand, WalletEvent]{
		Decider: WalletDecider{},
		// Valid and invalid commands alike, in any order.
		Commands: rapid.OneOf(
			rapid.Map(limit, func(l int64) WalletCommand { return OpenWallet{Limit: l} }),
			rapid.Map(amount, func(a int64) WalletCommand { return Deposit{Amount: a} }),
			rapid.Map(amount, func(a int64) WalletCommand { return Withdraw{Amount: a} }),
			rapid.Map(limit, func(l int64) WalletCommand { return SetLimit{Limit: l} }),
			rapid.Just[WalletCommand](Freeze{}),
			rapid.Just[WalletCommand](Unfreeze{}),
		),
		Invariants: []func(Wallet) error{
			func(w Wallet) error {
				if w.Balance < -w.Limit {
					return fmt.Errorf("balance %d is below the overdraft limit %d", w.Balance, w.Limit)
				}
				return nil
			},
		},
	})
}

func TestREADMEShowsWalletProperties(t *testing.T) {
	src, err := os.ReadFile("readme_test.go")
	if err != nil {
		t.Fatal(err)
	}
	start := strings.Index(string(src), "func TestWalletProperties(")
	end := strings.Index(string(src[start:]), "\n}\n")
	if start < 0 || end < 0 {
		t.Fatal("TestWalletProperties not found in readme_test.go")
	}
	want := string(src[start : start+end+3])
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if errors.Is(err, fs.ErrNotExist) {
		t.Skip("no README.md two directories up")
	}
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), want) {
		t.Errorf("README.md does not show TestWalletProperties as it is in readme_test.go:\n%s", want)
	}
}
