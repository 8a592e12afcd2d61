package projection

import (
	"testing"
	"time"

	"github.com/eskit/eskit/backoff"
)

// A partition whose sessions keep failing before they catch up is taken
// again after growing delays; one that caught up, or ended without
// failing, starts over.
func TestPartitionRestartBackoff(t *testing.T) {
	p := backoff.Policy{Initial: 10 * time.Millisecond, Max: 40 * time.Millisecond}
	now := time.Now()
	pt := &part{}
	var got []time.Duration
	for range 4 {
		pt.failed, pt.caughtUp = true, false
		pt.sessionEnded(p, now)
		got = append(got, pt.retryAt.Sub(now))
	}
	want := []time.Duration{10, 20, 40, 40}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("delays %v, want %v ms", got, want)
		}
	}
	pt.failed, pt.caughtUp = true, true
	pt.sessionEnded(p, now)
	if d := pt.retryAt.Sub(now); d != 10*time.Millisecond {
		t.Fatalf("a session that caught up before failing: delay %v, want the first", d)
	}
	pt.failed = false
	pt.sessionEnded(p, now)
	if !pt.retryAt.IsZero() || pt.restarts != 0 {
		t.Fatalf("a session that did not fail: retryAt %v, restarts %d", pt.retryAt, pt.restarts)
	}
}
