package aggregate_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/aggregate/internal/account"
	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/memstore"
)

// The conflict Handle gives up on says how often it was tried, and that it
// was retried already (for an outer retry, such as commandbus.Retry, to
// leave it alone) only when the repository did retry it.
func TestRetriesExhaustedError(t *testing.T) {
	for _, tc := range []struct {
		retries, attempts int
		retried           bool
	}{{2, 3, true}, {0, 1, false}} {
		t.Run(fmt.Sprintf("%d retries", tc.retries), func(t *testing.T) {
			store := memstore.New()
			other := newRepo(t, store)
			must(t, other, "acc-1", account.Open{Owner: "ann"})
			hs := &hookStore{Store: store, beforeAppend: func(context.Context, int64) {
				must(t, other, "acc-1", account.Deposit{Amount: 1})
			}}
			r := newRepo(t, hs, aggregate.WithMaxRetries(tc.retries), aggregate.WithBackoff(backoff.Policy{}))
			_, err := r.Handle(t.Context(), "acc-1", account.Deposit{Amount: 10})
			var exhausted *aggregate.RetriesExhaustedError
			if !errors.As(err, &exhausted) || !errors.Is(err, eventstore.ErrConcurrency) {
				t.Fatalf("got %v, want a *RetriesExhaustedError matching ErrConcurrency", err)
			}
			if exhausted.StreamID != "acc-1" || exhausted.Attempts != tc.attempts || exhausted.Retried() != tc.retried {
				t.Fatalf("got %+v (retried %v), want %d attempts on acc-1, retried %v", exhausted, exhausted.Retried(), tc.attempts, tc.retried)
			}
			if n := hs.appends.Load(); n != int64(tc.attempts) {
				t.Fatalf("%d appends, want %d", n, tc.attempts)
			}
			if want := fmt.Sprintf("gave up after %d attempts", tc.attempts); !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q does not say %q", err, want)
			}
		})
	}
}
