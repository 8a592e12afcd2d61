package domain_test

import (
	"testing"

	"github.com/google/uuid"

	"github.com/eskit/eskit/aggregate/aggtest"
	"github.com/eskit/eskit/examples/bank/domain"
)

type (
	transfer = domain.Transfer
	trCmd    = domain.TransferCommand
	trEvent  = domain.TransferEvent
)

var (
	fromID = uuid.MustParse("0196f3a0-0000-7000-8000-000000000011")
	toID   = uuid.MustParse("0196f3a0-0000-7000-8000-000000000022")
)

func givenTransfer(t *testing.T, events ...trEvent) *aggtest.Scenario[transfer, trCmd, trEvent] {
	t.Helper()
	return aggtest.Given[transfer, trCmd, trEvent](t, domain.TransferDecider{}, events...)
}

var requested = domain.TransferRequested{TransferID: trID, From: fromID, To: toID, Amount: 40, Currency: "EUR"}

func TestRequestTransfer(t *testing.T) {
	givenTransfer(t).
		When(domain.RequestTransfer{ID: trID, From: fromID, To: toID, Amount: 40, Currency: "EUR"}).
		Then(requested).
		ThenState(func(tr transfer) {
			want := transfer{ID: trID, Status: domain.StatusRequested, From: fromID, To: toID, Amount: 40, Currency: "EUR"}
			if tr != want {
				t.Errorf("state %+v, want %+v", tr, want)
			}
		})
	givenTransfer(t, requested).
		When(domain.RequestTransfer{ID: trID, From: fromID, To: toID, Amount: 40, Currency: "EUR"}).
		ThenError(domain.ErrTransferState)
	for _, tc := range []struct {
		name  string
		cmd   domain.RequestTransfer
		field string
	}{
		{"no ID", domain.RequestTransfer{From: fromID, To: toID, Amount: 1, Currency: "EUR"}, "id"},
		{"no source", domain.RequestTransfer{ID: trID, To: toID, Amount: 1, Currency: "EUR"}, "from"},
		{"no target", domain.RequestTransfer{ID: trID, From: fromID, Amount: 1, Currency: "EUR"}, "to"},
		{"to itself", domain.RequestTransfer{ID: trID, From: fromID, To: fromID, Amount: 1, Currency: "EUR"}, "to"},
		{"zero amount", domain.RequestTransfer{ID: trID, From: fromID, To: toID, Currency: "EUR"}, "amount"},
		{"bad currency", domain.RequestTransfer{ID: trID, From: fromID, To: toID, Amount: 1, Currency: "euro"}, "currency"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ve *domain.ValidationError
			givenTransfer(t).When(tc.cmd).ThenErrorAs(&ve)
			if ve != nil && ve.Field != tc.field {
				t.Errorf("field %q, want %q", ve.Field, tc.field)
			}
		})
	}
}

func TestTransferLifecycle(t *testing.T) {
	status := func(want domain.TransferStatus) func(transfer) {
		return func(tr transfer) {
			t.Helper()
			if tr.Status != want {
				t.Errorf("status %s, want %s", tr.Status, want)
			}
		}
	}
	// requested -> debited -> completed
	givenTransfer(t, requested).When(domain.RecordDebit{}).Then(domain.SourceDebited{}).ThenState(status(domain.StatusDebited))
	givenTransfer(t, requested, domain.SourceDebited{}).When(domain.CompleteTransfer{}).
		Then(domain.TransferCompleted{}).ThenState(status(domain.StatusCompleted))
	// requested -> rejected
	givenTransfer(t, requested).When(domain.RejectTransfer{Reason: "insufficient_funds"}).
		Then(domain.TransferRejected{Reason: "insufficient_funds"}).
		ThenState(func(tr transfer) {
			if tr.Status != domain.StatusRejected || tr.Reason != "insufficient_funds" || !tr.Status.Final() {
				t.Errorf("rejected transfer %+v", tr)
			}
		})
	// debited -> credit failed -> refunded
	givenTransfer(t, requested, domain.SourceDebited{}).When(domain.RecordCreditFailure{Reason: "account_closed"}).
		Then(domain.CreditFailed{Reason: "account_closed"}).ThenState(status(domain.StatusCreditFailed))
	givenTransfer(t, requested, domain.SourceDebited{}, domain.CreditFailed{Reason: "account_closed"}).
		When(domain.RecordRefund{}).Then(domain.TransferRefunded{}).ThenState(status(domain.StatusRefunded))

	// Every step starts from exactly one state.
	givenTransfer(t).When(domain.RecordDebit{}).ThenError(domain.ErrTransferNotFound)
	givenTransfer(t, requested).When(domain.CompleteTransfer{}).ThenError(domain.ErrTransferState)
	givenTransfer(t, requested).When(domain.RecordRefund{}).ThenError(domain.ErrTransferState)
	givenTransfer(t, requested, domain.SourceDebited{}).When(domain.RecordDebit{}).ThenError(domain.ErrTransferState)
	givenTransfer(t, requested, domain.SourceDebited{}).When(domain.RejectTransfer{}).ThenError(domain.ErrTransferState)
	givenTransfer(t, requested, domain.SourceDebited{}, domain.TransferCompleted{}).
		When(domain.RecordCreditFailure{}).ThenError(domain.ErrTransferState)
	givenTransfer(t, requested, domain.SourceDebited{}, domain.CreditFailed{}).
		When(domain.CompleteTransfer{}).ThenError(domain.ErrTransferState)
	givenTransfer(t, requested, domain.TransferRejected{}).When(domain.RecordDebit{}).ThenError(domain.ErrTransferState)

	for s, final := range map[domain.TransferStatus]bool{
		domain.StatusRequested: false, domain.StatusDebited: false, domain.StatusCreditFailed: false,
		domain.StatusRejected: true, domain.StatusCompleted: true, domain.StatusRefunded: true,
	} {
		if s.Final() != final {
			t.Errorf("%s.Final() = %v", s, !final)
		}
	}
}
