package domain_test

import (
	"math"
	"testing"

	"github.com/google/uuid"
	"pgregory.net/rapid"

	"github.com/eskit/eskit/aggregate/aggtest"
	"github.com/eskit/eskit/examples/bank/domain"
)

// amountGen draws amounts, small ones mostly, but also zero, negative,
// ones at the edge of MaxAmount and huge ones at the edge of int64 (which
// are refused).
var amountGen = rapid.OneOf(
	rapid.Int64Range(1, 1000),
	rapid.Int64Range(-5, 5),
	rapid.Int64Range(domain.MaxAmount-2, domain.MaxAmount+1),
	rapid.Int64Range(math.MaxInt64-1000, math.MaxInt64),
	rapid.SampledFrom([]int64{math.MinInt64, math.MaxInt64 / 2}),
)

var currencyGen = rapid.SampledFrom([]string{"EUR", "EUR", "EUR", "USD", "eur", ""})

var transferIDGen = rapid.SampledFrom([]uuid.UUID{trID, trID2, uuid.MustParse("0196f3a0-0000-7000-8000-0000000000cc")})

var accountCommandGen = rapid.OneOf(
	rapid.Custom(func(t *rapid.T) accCmd {
		return domain.OpenAccount{
			ID:             accID,
			Owner:          rapid.SampledFrom([]string{"ann", "bob", ""}).Draw(t, "owner"),
			Currency:       currencyGen.Draw(t, "currency"),
			OverdraftLimit: rapid.OneOf(rapid.Int64Range(-1, 500), rapid.SampledFrom([]int64{domain.MaxAmount, domain.MaxAmount + 1, math.MaxInt64})).Draw(t, "overdraft"),
		}
	}),
	rapid.Custom(func(t *rapid.T) accCmd {
		return domain.Deposit{Amount: amountGen.Draw(t, "amount"), Currency: currencyGen.Draw(t, "currency")}
	}),
	rapid.Custom(func(t *rapid.T) accCmd {
		return domain.Withdraw{Amount: amountGen.Draw(t, "amount"), Currency: currencyGen.Draw(t, "currency")}
	}),
	rapid.Custom(func(t *rapid.T) accCmd {
		return domain.DebitForTransfer{TransferID: transferIDGen.Draw(t, "transfer"), Amount: amountGen.Draw(t, "amount"), Currency: currencyGen.Draw(t, "currency")}
	}),
	rapid.Custom(func(t *rapid.T) accCmd {
		return domain.CreditForTransfer{TransferID: transferIDGen.Draw(t, "transfer"), Amount: amountGen.Draw(t, "amount"), Currency: currencyGen.Draw(t, "currency")}
	}),
	rapid.Custom(func(t *rapid.T) accCmd { return domain.RefundTransfer{TransferID: transferIDGen.Draw(t, "transfer")} }),
	rapid.Custom(func(t *rapid.T) accCmd { return domain.SettleTransfer{TransferID: transferIDGen.Draw(t, "transfer")} }),
	rapid.Just[accCmd](domain.Freeze{Reason: "check"}),
	rapid.Just[accCmd](domain.Unfreeze{}),
	rapid.Just[accCmd](domain.Close{}),
)

var accountSpec = aggtest.Spec[account, accCmd, accEvent]{
	Decider:    domain.AccountDecider{},
	Commands:   accountCommandGen,
	Invariants: []func(account) error{domain.AccountInvariant},
}

// TestAccountProperties: under random command sequences the balance never
// goes below minus the overdraft limit and nothing overflows (the
// invariant), decisions are deterministic and replaying the events gives
// the same account, and an account restored from a snapshot of any prefix
// plus the remaining events equals the full replay.
func TestAccountProperties(t *testing.T) {
	aggtest.Check(t, accountSpec)
}

// TestAccountBalanceFollowsEvents: the balance is always the sum of the
// accepted amounts in and out.
func TestAccountBalanceFollowsEvents(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		cmds := rapid.SliceOfN(accountCommandGen, 0, 60).Draw(rt, "commands")
		d := domain.AccountDecider{}
		a := d.Initial()
		var sum int64
		for _, c := range cmds {
			events, err := d.Decide(a, c)
			if err != nil {
				continue
			}
			for _, e := range events {
				switch e := e.(type) {
				case domain.Deposited:
					sum += e.Amount
				case domain.Withdrawn:
					sum -= e.Amount
				}
				a = d.Evolve(a, e)
			}
			if a.Balance != sum {
				rt.Fatalf("balance %d, but the events add up to %d", a.Balance, sum)
			}
		}
	})
}

var transferCommandGen = rapid.OneOf(
	rapid.Custom(func(t *rapid.T) trCmd {
		return domain.RequestTransfer{
			ID:       trID,
			From:     fromID,
			To:       rapid.SampledFrom([]uuid.UUID{toID, fromID, uuid.Nil}).Draw(t, "to"),
			Amount:   amountGen.Draw(t, "amount"),
			Currency: currencyGen.Draw(t, "currency"),
		}
	}),
	rapid.Just[trCmd](domain.RecordDebit{}),
	rapid.Just[trCmd](domain.RejectTransfer{Reason: "insufficient_funds"}),
	rapid.Just[trCmd](domain.CompleteTransfer{}),
	rapid.Just[trCmd](domain.RecordCreditFailure{Reason: "account_frozen"}),
	rapid.Just[trCmd](domain.RecordRefund{}),
)

// transferInvariant: a transfer, once requested, keeps its terms, and the
// reason is set exactly in the states that have one.
func transferInvariant(tr transfer) error {
	if tr.Status == "" {
		if tr != (transfer{}) {
			return errorf("transfer never requested has state %+v", tr)
		}
		return nil
	}
	if tr.ID != trID || tr.From != fromID || tr.To == tr.From || tr.Amount <= 0 || !domain.ValidCurrency(tr.Currency) {
		return errorf("transfer with invalid terms %+v", tr)
	}
	hasReason := tr.Status == domain.StatusRejected || tr.Status == domain.StatusCreditFailed || tr.Status == domain.StatusRefunded
	if hasReason != (tr.Reason != "") {
		return errorf("transfer %s with reason %q", tr.Status, tr.Reason)
	}
	return nil
}

func TestTransferProperties(t *testing.T) {
	aggtest.Check(t, aggtest.Spec[transfer, trCmd, trEvent]{
		Decider:    domain.TransferDecider{},
		Commands:   transferCommandGen,
		Invariants: []func(transfer) error{transferInvariant},
	})
}
