package api

import (
	"math"
	"net/http"
	"testing"

	"github.com/google/uuid"

	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/examples/bank/domain"
)

// Amounts above domain.MaxAmount are refused before anything is loaded,
// as 400 invalid_amount naming the field; MaxAmount itself passes.
func TestAmountsAreBounded(t *testing.T) {
	a, b := uuid.New(), uuid.New()
	commands := func(amount int64) map[string]commandbus.Validator {
		return map[string]commandbus.Validator{
			"deposit":  Deposit{AccountID: a, Amount: amount},
			"withdraw": Withdraw{AccountID: a, Amount: amount, Currency: "EUR"},
			"transfer": RequestTransfer{From: a, To: b, Amount: amount},
		}
	}
	for name, cmd := range commands(domain.MaxAmount) {
		if err := cmd.Validate(); err != nil {
			t.Errorf("%s of MaxAmount: %v", name, err)
		}
	}
	for _, amount := range []int64{domain.MaxAmount + 1, math.MaxInt64} {
		for name, cmd := range commands(amount) {
			status, body := classify(cmd.Validate())
			if status != http.StatusBadRequest || body.Code != "invalid_amount" || body.Field != "amount" {
				t.Errorf("%s of %d: %d %+v, want 400 invalid_amount on amount", name, amount, status, body)
			}
		}
	}

	if err := (OpenAccount{Owner: "a", Currency: "EUR", OverdraftLimit: domain.MaxAmount}).Validate(); err != nil {
		t.Errorf("overdraft limit of MaxAmount: %v", err)
	}
	status, body := classify(OpenAccount{Owner: "a", Currency: "EUR", OverdraftLimit: domain.MaxAmount + 1}.Validate())
	if status != http.StatusBadRequest || body.Field != "overdraft_limit" {
		t.Errorf("overdraft limit above MaxAmount: %d %+v, want 400 on overdraft_limit", status, body)
	}
}
