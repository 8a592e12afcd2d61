package api

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/eskit/eskit/eventstore"
)

// Every infrastructure fault a retry can resolve is 503 and every invalid
// argument the store refuses is 400: nothing of the kind is a 500.
func TestClassifyStatuses(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{fmt.Errorf("append: %w", &eventstore.InvalidArgumentError{Field: "events[0].Data", Reason: "too large"}), http.StatusBadRequest, "invalid_request"},
		{&eventstore.OutcomeUnknownError{Err: errors.New("unexpected EOF")}, http.StatusServiceUnavailable, "outcome_unknown"},
		{fmt.Errorf("pgstore: %w: deadlock", eventstore.ErrTransient), http.StatusServiceUnavailable, "unavailable"},
		{eventstore.ErrClosed, http.StatusServiceUnavailable, "unavailable"},
		{errors.New("disk on fire"), http.StatusInternalServerError, "internal_error"},
	} {
		status, body := classify(tc.err)
		if status != tc.status || body.Code != tc.code {
			t.Errorf("classify(%v) = %d %q, want %d %q", tc.err, status, body.Code, tc.status, tc.code)
		}
	}
}
