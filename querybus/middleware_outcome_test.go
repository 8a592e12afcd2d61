package querybus_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/eskit/eskit/querybus"
	"github.com/eskit/eskit/telemetry"
)

type flagErr struct{ nf, inv, tmp bool }

func (e flagErr) Error() string         { return "flagged" }
func (e flagErr) NotFound() bool        { return e.nf }
func (e flagErr) InvalidArgument() bool { return e.inv }
func (e flagErr) Temporary() bool       { return e.tmp }

// Logging and Telemetry name a failed query's outcome the same way:
// Outcome's.
func TestOutcome(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, telemetry.OutcomeOK},
		{fmt.Errorf("q: %w", flagErr{nf: true}), telemetry.OutcomeNotFound},
		{fmt.Errorf("q: %w", flagErr{inv: true}), telemetry.OutcomeInvalid},
		{fmt.Errorf("q: %w", flagErr{tmp: true}), telemetry.OutcomeUnavailable},
		{fmt.Errorf("q: %w", querybus.ErrConsistencyTimeout), telemetry.OutcomeUnavailable},
		{flagErr{}, telemetry.OutcomeError},
		{errors.New("boom"), telemetry.OutcomeError},
	} {
		if got := querybus.Outcome(tc.err); got != tc.want {
			t.Errorf("Outcome(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}
