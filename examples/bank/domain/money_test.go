package domain_test

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/eskit/eskit/examples/bank/domain"
)

// refusedAmount checks that err is a *ValidationError of the field wrapping
// ErrInvalidAmount, whose reason names the maximum.
func refusedAmount(t *testing.T, what string, err error, field string) {
	t.Helper()
	var ve *domain.ValidationError
	switch {
	case !errors.As(err, &ve):
		t.Errorf("%s: %v, want a *ValidationError", what, err)
	case ve.Field != field || !errors.Is(err, domain.ErrInvalidAmount):
		t.Errorf("%s: %+v, want field %q wrapping ErrInvalidAmount", what, ve, field)
	case domain.ErrorCode(err) != "invalid_amount":
		t.Errorf("%s: code %q", what, domain.ErrorCode(err))
	case !strings.Contains(ve.Reason, "1000000000000000"):
		t.Errorf("%s: the reason %q does not name the maximum", what, ve.Reason)
	}
}

// Every command carrying an amount takes MaxAmount and refuses anything
// above it.
func TestMaxAmount(t *testing.T) {
	if domain.MaxAmount != 1_000_000_000_000_000 {
		t.Fatalf("MaxAmount = %d", domain.MaxAmount)
	}
	accountCommands := func(amount int64) map[string]accCmd {
		return map[string]accCmd{
			"deposit":  domain.Deposit{Amount: amount, Currency: "EUR"},
			"withdraw": domain.Withdraw{Amount: amount, Currency: "EUR"},
			"debit":    domain.DebitForTransfer{TransferID: trID, Amount: amount, Currency: "EUR"},
			"credit":   domain.CreditForTransfer{TransferID: trID, Amount: amount, Currency: "EUR"},
		}
	}
	// Enough funds and overdraft for any withdrawal of at most MaxAmount.
	funded := []accEvent{opened(domain.MaxAmount), domain.Deposited{Amount: domain.MaxAmount, Balance: domain.MaxAmount}}
	for name, cmd := range accountCommands(domain.MaxAmount) {
		givenAccount(t, funded...).When(cmd).ThenState(func(a account) {
			if a.Balance != 0 && a.Balance != 2*domain.MaxAmount {
				t.Errorf("%s of MaxAmount: balance %d", name, a.Balance)
			}
		})
	}
	for _, amount := range []int64{domain.MaxAmount + 1, math.MaxInt64} {
		for name, cmd := range accountCommands(amount) {
			_, err := domain.AccountDecider{}.Decide(replay(funded), cmd)
			refusedAmount(t, name, err, "amount")
		}
	}

	request := func(amount int64) domain.RequestTransfer {
		return domain.RequestTransfer{ID: trID, From: fromID, To: toID, Amount: amount, Currency: "EUR"}
	}
	givenTransfer(t).When(request(domain.MaxAmount)).
		Then(domain.TransferRequested{TransferID: trID, From: fromID, To: toID, Amount: domain.MaxAmount, Currency: "EUR"})
	for _, amount := range []int64{domain.MaxAmount + 1, math.MaxInt64} {
		_, err := domain.TransferDecider{}.Decide(domain.Transfer{}, request(amount))
		refusedAmount(t, "transfer", err, "amount")
	}

	// The overdraft limit is bounded too.
	open := func(limit int64) domain.OpenAccount {
		return domain.OpenAccount{ID: accID, Owner: "ann", Currency: "EUR", OverdraftLimit: limit}
	}
	givenAccount(t).When(open(domain.MaxAmount)).Then(opened(domain.MaxAmount))
	for _, limit := range []int64{domain.MaxAmount + 1, math.MaxInt64} {
		var ve *domain.ValidationError
		s := givenAccount(t).When(open(limit)).ThenErrorAs(&ve).ThenError(domain.ErrValidation)
		if ve != nil && (ve.Field != "overdraft_limit" || !strings.Contains(ve.Reason, "1000000000000000")) {
			t.Errorf("overdraft limit %d: %v", limit, s.Err())
		}
	}
}

// Balances still grow past MaxAmount, up to the int64 limit, and no
// further: deposits of MaxAmount fill an account up to MaxInt64, and the
// one that would overflow is refused with ErrBalanceOverflow.
func TestBalanceOverflowWithBoundedAmounts(t *testing.T) {
	d := domain.AccountDecider{}
	a := replay([]accEvent{opened(0)})
	deposit := func(amount int64) error {
		events, err := d.Decide(a, domain.Deposit{Amount: amount, Currency: "EUR"})
		for _, e := range events {
			a = d.Evolve(a, e)
		}
		return err
	}
	full := math.MaxInt64 / domain.MaxAmount // 9223 deposits of MaxAmount fit
	for i := range full {
		if err := deposit(domain.MaxAmount); err != nil {
			t.Fatalf("deposit %d of MaxAmount: %v", i+1, err)
		}
	}
	if err := deposit(domain.MaxAmount); !errors.Is(err, domain.ErrBalanceOverflow) {
		t.Fatalf("a deposit of MaxAmount on %d: %v, want ErrBalanceOverflow", a.Balance, err)
	}
	if err := deposit(math.MaxInt64%domain.MaxAmount + 1); !errors.Is(err, domain.ErrBalanceOverflow) {
		t.Fatalf("a deposit one above the room left: %v, want ErrBalanceOverflow", err)
	}
	if err := deposit(math.MaxInt64 % domain.MaxAmount); err != nil || a.Balance != math.MaxInt64 {
		t.Fatalf("a deposit up to MaxInt64: %v, balance %d", err, a.Balance)
	}
	if err := deposit(1); !errors.Is(err, domain.ErrBalanceOverflow) {
		t.Fatalf("a deposit of 1 on MaxInt64: %v, want ErrBalanceOverflow", err)
	}
	if err := domain.AccountInvariant(a); err != nil {
		t.Fatal(err)
	}

	// A transfer's credit is bounded the same way.
	near := []accEvent{opened(0), domain.Deposited{Amount: domain.MaxAmount, Balance: math.MaxInt64 - domain.MaxAmount + 1}}
	givenAccount(t, near...).
		When(domain.CreditForTransfer{TransferID: trID, Amount: domain.MaxAmount, Currency: "EUR"}).
		ThenError(domain.ErrBalanceOverflow)
	givenAccount(t, near...).
		When(domain.CreditForTransfer{TransferID: trID, Amount: domain.MaxAmount - 1, Currency: "EUR"}).
		Then(domain.Deposited{Amount: domain.MaxAmount - 1, Balance: math.MaxInt64, TransferID: trID})
}

// replay folds events into an account.
func replay(events []accEvent) account {
	d := domain.AccountDecider{}
	a := d.Initial()
	for _, e := range events {
		a = d.Evolve(a, e)
	}
	return a
}
