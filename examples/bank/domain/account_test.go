package domain_test

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/aggregate/aggtest"
	"github.com/eskit/eskit/examples/bank/domain"
)

type (
	account  = domain.Account
	accCmd   = domain.AccountCommand
	accEvent = domain.AccountEvent
)

var (
	accID = uuid.MustParse("0196f3a0-0000-7000-8000-000000000001")
	trID  = uuid.MustParse("0196f3a0-0000-7000-8000-0000000000aa")
	trID2 = uuid.MustParse("0196f3a0-0000-7000-8000-0000000000bb")
)

func givenAccount(t *testing.T, events ...accEvent) *aggtest.Scenario[account, accCmd, accEvent] {
	t.Helper()
	return aggtest.Given[account, accCmd, accEvent](t, domain.AccountDecider{}, events...)
}

func opened(overdraft int64) domain.AccountOpened {
	return domain.AccountOpened{AccountID: accID, Owner: "ann", Currency: "EUR", OverdraftLimit: overdraft}
}

func TestOpenAccount(t *testing.T) {
	givenAccount(t).
		When(domain.OpenAccount{ID: accID, Owner: "ann", Currency: "EUR", OverdraftLimit: 500}).
		Then(domain.AccountOpened{AccountID: accID, Owner: "ann", Currency: "EUR", OverdraftLimit: 500}).
		ThenState(func(a account) {
			if a.Status != domain.StatusOpen || a.Balance != 0 || a.ID != accID {
				t.Errorf("state after opening: %+v", a)
			}
		})
	givenAccount(t, opened(0)).
		When(domain.OpenAccount{ID: accID, Owner: "bob", Currency: "EUR"}).
		ThenError(domain.ErrAlreadyOpen)

	for _, tc := range []struct {
		name  string
		cmd   domain.OpenAccount
		field string
	}{
		{"empty owner", domain.OpenAccount{ID: accID, Owner: "  ", Currency: "EUR"}, "owner"},
		{"lower-case currency", domain.OpenAccount{ID: accID, Owner: "ann", Currency: "eur"}, "currency"},
		{"short currency", domain.OpenAccount{ID: accID, Owner: "ann", Currency: "EU"}, "currency"},
		{"currency with digits", domain.OpenAccount{ID: accID, Owner: "ann", Currency: "E1R"}, "currency"},
		{"negative overdraft", domain.OpenAccount{ID: accID, Owner: "ann", Currency: "EUR", OverdraftLimit: -1}, "overdraft_limit"},
		{"no ID", domain.OpenAccount{Owner: "ann", Currency: "EUR"}, "id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ve *domain.ValidationError
			s := givenAccount(t).When(tc.cmd).ThenErrorAs(&ve).ThenError(domain.ErrValidation)
			if ve != nil && ve.Field != tc.field {
				t.Errorf("field %q, want %q (%v)", ve.Field, tc.field, s.Err())
			}
		})
	}
}

func TestDeposit(t *testing.T) {
	givenAccount(t, opened(0)).
		When(domain.Deposit{Amount: 250, Currency: "EUR"}).
		Then(domain.Deposited{Amount: 250, Balance: 250})
	givenAccount(t, opened(0), domain.Deposited{Amount: 250, Balance: 250}).
		When(domain.Deposit{Amount: 50, Currency: "EUR"}).
		Then(domain.Deposited{Amount: 50, Balance: 300})

	givenAccount(t).When(domain.Deposit{Amount: 1, Currency: "EUR"}).ThenError(domain.ErrAccountNotFound)
	givenAccount(t, opened(0)).When(domain.Deposit{Amount: 1, Currency: "USD"}).ThenError(domain.ErrCurrencyMismatch)
	var cm *domain.CurrencyMismatchError
	givenAccount(t, opened(0)).When(domain.Deposit{Amount: 1, Currency: "USD"}).ThenErrorAs(&cm)
	if cm != nil && (cm.Account != "EUR" || cm.Got != "USD") {
		t.Errorf("mismatch error %+v", cm)
	}
	for _, amount := range []int64{0, -1, math.MinInt64} {
		givenAccount(t, opened(0)).When(domain.Deposit{Amount: amount, Currency: "EUR"}).
			ThenError(domain.ErrInvalidAmount).ThenError(domain.ErrValidation)
	}
	givenAccount(t, opened(0), domain.AccountFrozen{}).
		When(domain.Deposit{Amount: 1, Currency: "EUR"}).ThenError(domain.ErrAccountFrozen)
	givenAccount(t, opened(0), domain.AccountClosed{}).
		When(domain.Deposit{Amount: 1, Currency: "EUR"}).ThenError(domain.ErrAccountClosed)
}

func TestDepositOverflow(t *testing.T) {
	givenAccount(t, opened(0), domain.Deposited{Amount: math.MaxInt64 - 10, Balance: math.MaxInt64 - 10}).
		When(domain.Deposit{Amount: 11, Currency: "EUR"}).ThenError(domain.ErrBalanceOverflow)
	givenAccount(t, opened(0), domain.Deposited{Amount: math.MaxInt64 - 10, Balance: math.MaxInt64 - 10}).
		When(domain.Deposit{Amount: 10, Currency: "EUR"}).
		Then(domain.Deposited{Amount: 10, Balance: math.MaxInt64})
	// Room is kept for the refund of a transfer in flight.
	givenAccount(t, opened(0),
		domain.Deposited{Amount: math.MaxInt64 - 10, Balance: math.MaxInt64 - 10},
		domain.Withdrawn{Amount: 100, Balance: math.MaxInt64 - 110, TransferID: trID}).
		When(domain.Deposit{Amount: 11, Currency: "EUR"}).ThenError(domain.ErrBalanceOverflow)
}

func TestWithdraw(t *testing.T) {
	funded := []accEvent{opened(0), domain.Deposited{Amount: 100, Balance: 100}}
	givenAccount(t, funded...).
		When(domain.Withdraw{Amount: 100, Currency: "EUR"}).
		Then(domain.Withdrawn{Amount: 100, Balance: 0})
	var ife *domain.InsufficientFundsError
	givenAccount(t, funded...).
		When(domain.Withdraw{Amount: 101, Currency: "EUR"}).
		ThenError(domain.ErrInsufficientFunds).ThenErrorAs(&ife)
	if ife != nil && (*ife != domain.InsufficientFundsError{Balance: 100, OverdraftLimit: 0, Amount: 101}) {
		t.Errorf("insufficient funds error %+v", ife)
	}
	// The overdraft limit lets the balance go down to minus the limit,
	// never further.
	withOverdraft := []accEvent{opened(50), domain.Deposited{Amount: 100, Balance: 100}}
	givenAccount(t, withOverdraft...).
		When(domain.Withdraw{Amount: 150, Currency: "EUR"}).
		Then(domain.Withdrawn{Amount: 150, Balance: -50})
	givenAccount(t, withOverdraft...).
		When(domain.Withdraw{Amount: 151, Currency: "EUR"}).ThenError(domain.ErrInsufficientFunds)
	// Balance + overdraft beyond int64 does not wrap around (a history
	// from before MaxAmount bounded the overdraft limit).
	givenAccount(t, opened(math.MaxInt64), domain.Deposited{Amount: math.MaxInt64, Balance: math.MaxInt64}).
		When(domain.Withdraw{Amount: domain.MaxAmount, Currency: "EUR"}).
		Then(domain.Withdrawn{Amount: domain.MaxAmount, Balance: math.MaxInt64 - domain.MaxAmount})
	givenAccount(t, opened(math.MaxInt64), domain.Withdrawn{Amount: math.MaxInt64 - domain.MaxAmount, Balance: domain.MaxAmount - math.MaxInt64}).
		When(domain.Withdraw{Amount: domain.MaxAmount, Currency: "EUR"}).
		Then(domain.Withdrawn{Amount: domain.MaxAmount, Balance: -math.MaxInt64})

	givenAccount(t).When(domain.Withdraw{Amount: 1, Currency: "EUR"}).ThenError(domain.ErrAccountNotFound)
	givenAccount(t, funded...).When(domain.Withdraw{Amount: 1, Currency: "GBP"}).ThenError(domain.ErrCurrencyMismatch)
	givenAccount(t, funded...).When(domain.Withdraw{Amount: 0, Currency: "EUR"}).ThenError(domain.ErrInvalidAmount)
	givenAccount(t, append(funded, domain.AccountFrozen{})...).
		When(domain.Withdraw{Amount: 1, Currency: "EUR"}).ThenError(domain.ErrAccountFrozen)
	givenAccount(t, append(funded, domain.Withdrawn{Amount: 100}, domain.AccountClosed{})...).
		When(domain.Withdraw{Amount: 1, Currency: "EUR"}).ThenError(domain.ErrAccountClosed)
}

func TestFreezeAndUnfreeze(t *testing.T) {
	givenAccount(t, opened(0)).When(domain.Freeze{Reason: "audit"}).Then(domain.AccountFrozen{Reason: "audit"})
	givenAccount(t, opened(0), domain.AccountFrozen{}).When(domain.Freeze{}).Then()
	givenAccount(t, opened(0), domain.AccountFrozen{}).When(domain.Unfreeze{}).Then(domain.AccountUnfrozen{}).
		ThenState(func(a account) {
			if a.Status != domain.StatusOpen {
				t.Errorf("status after unfreezing: %s", a.Status)
			}
		})
	givenAccount(t, opened(0)).When(domain.Unfreeze{}).Then()
	givenAccount(t, opened(0), domain.AccountFrozen{}, domain.AccountUnfrozen{}).
		When(domain.Deposit{Amount: 5, Currency: "EUR"}).Then(domain.Deposited{Amount: 5, Balance: 5})
	givenAccount(t).When(domain.Freeze{}).ThenError(domain.ErrAccountNotFound)
	givenAccount(t).When(domain.Unfreeze{}).ThenError(domain.ErrAccountNotFound)
	givenAccount(t, opened(0), domain.AccountClosed{}).When(domain.Freeze{}).ThenError(domain.ErrAccountClosed)
	givenAccount(t, opened(0), domain.AccountClosed{}).When(domain.Unfreeze{}).ThenError(domain.ErrAccountClosed)
}

func TestClose(t *testing.T) {
	givenAccount(t, opened(0)).When(domain.Close{}).Then(domain.AccountClosed{})
	givenAccount(t, opened(0), domain.Deposited{Amount: 1, Balance: 1}).When(domain.Close{}).ThenError(domain.ErrNonZeroBalance)
	givenAccount(t, opened(10), domain.Withdrawn{Amount: 1, Balance: -1}).When(domain.Close{}).ThenError(domain.ErrNonZeroBalance)
	givenAccount(t, opened(0), domain.AccountFrozen{}).When(domain.Close{}).ThenError(domain.ErrAccountFrozen)
	givenAccount(t, opened(0), domain.AccountClosed{}).When(domain.Close{}).ThenError(domain.ErrAccountClosed)
	givenAccount(t).When(domain.Close{}).ThenError(domain.ErrAccountNotFound)
	// Zero balance, but a transfer is in flight: its refund needs the
	// account open.
	givenAccount(t, opened(0), domain.Deposited{Amount: 5, Balance: 5}, domain.Withdrawn{Amount: 5, Balance: 0, TransferID: trID}).
		When(domain.Close{}).ThenError(domain.ErrTransferPending)
}

func TestTransferCommandsOnAccounts(t *testing.T) {
	funded := []accEvent{opened(0), domain.Deposited{Amount: 100, Balance: 100}}
	debited := append(funded, domain.Withdrawn{Amount: 30, Balance: 70, TransferID: trID})

	givenAccount(t, funded...).
		When(domain.DebitForTransfer{TransferID: trID, Amount: 30, Currency: "EUR"}).
		Then(domain.Withdrawn{Amount: 30, Balance: 70, TransferID: trID}).
		ThenState(func(a account) {
			if len(a.Pending) != 1 || a.Pending[0] != (domain.PendingTransfer{TransferID: trID, Amount: 30}) || a.PendingTotal() != 30 {
				t.Errorf("pending after the debit: %+v", a.Pending)
			}
		})
	givenAccount(t, debited...).
		When(domain.DebitForTransfer{TransferID: trID, Amount: 30, Currency: "EUR"}).ThenError(domain.ErrTransferState)
	givenAccount(t, funded...).
		When(domain.DebitForTransfer{TransferID: trID, Amount: 101, Currency: "EUR"}).ThenError(domain.ErrInsufficientFunds)
	givenAccount(t, funded...).
		When(domain.CreditForTransfer{TransferID: trID, Amount: 30, Currency: "EUR"}).
		Then(domain.Deposited{Amount: 30, Balance: 130, TransferID: trID})
	givenAccount(t, funded...).
		When(domain.CreditForTransfer{TransferID: trID, Amount: 30, Currency: "USD"}).ThenError(domain.ErrCurrencyMismatch)
	givenAccount(t).
		When(domain.CreditForTransfer{TransferID: trID, Amount: 30, Currency: "EUR"}).ThenError(domain.ErrAccountNotFound)

	// Refunds: even a frozen account takes its money back.
	givenAccount(t, debited...).
		When(domain.RefundTransfer{TransferID: trID}).
		Then(domain.Deposited{Amount: 30, Balance: 100, TransferID: trID, Refund: true}).
		ThenState(func(a account) {
			if a.Pending != nil {
				t.Errorf("pending after the refund: %+v", a.Pending)
			}
		})
	givenAccount(t, append(debited, domain.AccountFrozen{})...).
		When(domain.RefundTransfer{TransferID: trID}).
		Then(domain.Deposited{Amount: 30, Balance: 100, TransferID: trID, Refund: true})
	givenAccount(t, debited...).When(domain.RefundTransfer{TransferID: trID2}).ThenError(domain.ErrTransferState)

	givenAccount(t, debited...).
		When(domain.SettleTransfer{TransferID: trID}).
		Then(domain.TransferSettled{TransferID: trID, Amount: 30}).
		ThenState(func(a account) {
			if a.Pending != nil || a.Balance != 70 {
				t.Errorf("after settling: %+v", a)
			}
		})
	givenAccount(t, append(debited, domain.TransferSettled{TransferID: trID, Amount: 30})...).
		When(domain.SettleTransfer{TransferID: trID}).ThenError(domain.ErrTransferState)
}

func TestErrorCode(t *testing.T) {
	for err, want := range map[error]string{
		&domain.InsufficientFundsError{}:                                       "insufficient_funds",
		&domain.CurrencyMismatchError{}:                                        "currency_mismatch",
		&domain.ValidationError{Field: "amount", Err: domain.ErrInvalidAmount}: "invalid_amount",
		&domain.ValidationError{Field: "owner"}:                                "invalid_request",
		domain.ErrAccountFrozen:                                                "account_frozen",
		domain.ErrAccountClosed:                                                "account_closed",
		domain.ErrAccountNotFound:                                              "account_not_found",
		errors.New("other"):                                                    "",
	} {
		if got := domain.ErrorCode(err); got != want {
			t.Errorf("ErrorCode(%v) = %q, want %q", err, got, want)
		}
	}
}

func TestAccountInvariantCatchesBrokenStates(t *testing.T) {
	for _, a := range []account{
		{Status: domain.StatusOpen, Balance: -11, OverdraftLimit: 10},
		{Status: domain.StatusOpen, OverdraftLimit: -1},
		{Status: domain.StatusOpen, Balance: math.MaxInt64, Pending: []domain.PendingTransfer{{TransferID: trID, Amount: 1}}},
		{Status: domain.StatusOpen, Pending: []domain.PendingTransfer{{TransferID: trID, Amount: math.MaxInt64}, {TransferID: trID2, Amount: 1}}},
		{Status: domain.StatusOpen, Pending: []domain.PendingTransfer{{TransferID: trID, Amount: 0}}},
		{Status: domain.StatusClosed, Balance: 1},
		{Status: domain.StatusClosed, Pending: []domain.PendingTransfer{{TransferID: trID, Amount: 1}}},
		{Balance: 3},
	} {
		if domain.AccountInvariant(a) == nil {
			t.Errorf("AccountInvariant accepts %+v", a)
		}
	}
	if err := domain.AccountInvariant(account{Status: domain.StatusOpen, Balance: -10, OverdraftLimit: 10}); err != nil {
		t.Errorf("AccountInvariant rejects a valid account: %v", err)
	}
}

// An owner's name is bounded text: long, binary or control-character
// names are refused before anything is written.
func TestOpenRefusesHostileOwners(t *testing.T) {
	for _, owner := range []string{strings.Repeat("x", domain.MaxOwnerLength+1), strings.Repeat("é", 101), "a\x00b", "line\nbreak", "\xff"} {
		_, err := domain.AccountDecider{}.Decide(domain.AccountDecider{}.Initial(),
			domain.OpenAccount{ID: uuid.New(), Owner: owner, Currency: "EUR"})
		var ve *domain.ValidationError
		require.ErrorAs(t, err, &ve, "%q", owner)
		require.Equal(t, "owner", ve.Field)
		require.Less(t, len(ve.Error()), 200, "the error does not echo the input")
	}
	_, err := domain.AccountDecider{}.Decide(domain.AccountDecider{}.Initial(),
		domain.OpenAccount{ID: uuid.New(), Owner: strings.Repeat("é", 100), Currency: "EUR"})
	require.NoError(t, err)
}

// An account answers only to the principal that opened it: to any other,
// every command finds no account, so a caller cannot learn that another's
// account exists, let alone move its money.
func TestAccountAnswersOnlyToItsPrincipal(t *testing.T) {
	mine := domain.AccountOpened{AccountID: accID, Owner: "ann", Principal: "alice", Currency: "EUR"}
	givenAccount(t).
		When(domain.OpenAccount{ID: accID, Owner: "ann", Principal: "alice", Currency: "EUR"}).
		Then(mine).
		ThenState(func(a account) { require.Equal(t, "alice", a.Principal) })
	for _, by := range []string{"bob", "", "Alice", "alice "} {
		for _, cmd := range []accCmd{
			domain.Deposit{Amount: 1, Currency: "EUR", By: by},
			domain.Withdraw{Amount: 1, Currency: "EUR", By: by},
			domain.Freeze{By: by},
			domain.Unfreeze{By: by},
			domain.Close{By: by},
		} {
			givenAccount(t, mine).When(cmd).ThenError(domain.ErrAccountNotFound)
		}
	}
	givenAccount(t, mine).
		When(domain.Deposit{Amount: 5, Currency: "EUR", By: "alice"}).
		Then(domain.Deposited{Amount: 5, Balance: 5})
	// The transfer process's commands carry no principal: it acts for the
	// bank, once the transfer's requester was checked.
	givenAccount(t, mine, domain.Deposited{Amount: 5, Balance: 5}).
		When(domain.DebitForTransfer{TransferID: trID, Amount: 5, Currency: "EUR"}).
		Then(domain.Withdrawn{Amount: 5, Balance: 0, TransferID: trID})
	var ve *domain.ValidationError
	givenAccount(t).
		When(domain.OpenAccount{ID: accID, Owner: "ann", Principal: "al ice", Currency: "EUR"}).
		ThenErrorAs(&ve)
	require.Equal(t, "principal", ve.Field)
}

// A freeze's reason is bounded text, like the owner's name.
func TestFreezeReasonIsBoundedText(t *testing.T) {
	for _, reason := range []string{strings.Repeat("x", domain.MaxReasonLength+1), "a\x00b", "line\nbreak", "\xff"} {
		_, err := domain.AccountDecider{}.Decide(domain.AccountDecider{}.Evolve(account{}, opened(0)), domain.Freeze{Reason: reason})
		var ve *domain.ValidationError
		require.ErrorAs(t, err, &ve, "%q", reason)
		require.Equal(t, "reason", ve.Field)
	}
	givenAccount(t, opened(0)).
		When(domain.Freeze{Reason: strings.Repeat("é", domain.MaxReasonLength/2)}).
		Then(domain.AccountFrozen{Reason: strings.Repeat("é", domain.MaxReasonLength/2)})
}

func TestValidPrincipal(t *testing.T) {
	for _, p := range []string{"alice", "a", "svc-1.prod_eu", strings.Repeat("a", domain.MaxPrincipalLength)} {
		require.True(t, domain.ValidPrincipal(p), p)
	}
	for _, p := range []string{"", "-a", ".a", "a b", "a\n", "é", strings.Repeat("a", domain.MaxPrincipalLength+1), "a:b"} {
		require.False(t, domain.ValidPrincipal(p), "%q", p)
	}
}
