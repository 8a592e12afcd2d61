package backoff

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"
)

func TestPolicyGrowsUpToMax(t *testing.T) {
	p := Policy{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond}
	want := []time.Duration{10, 20, 40, 50, 50}
	for i, w := range want {
		if got := p.Next(i + 1); got != w*time.Millisecond {
			t.Fatalf("Next(%d) = %v, want %v", i+1, got, w*time.Millisecond)
		}
	}
	if got := p.Next(0); got != 10*time.Millisecond {
		t.Fatalf("Next(0) = %v: counts as the first failure", got)
	}
	if got := p.Next(10_000); got != 50*time.Millisecond {
		t.Fatalf("Next(10000) = %v: overflows must cap at Max", got)
	}
	p.Multiplier = 1.5
	if got := p.Next(2); got != 15*time.Millisecond {
		t.Fatalf("Next(2) with multiplier 1.5 = %v", got)
	}
}

func TestPolicyJitterStaysInRange(t *testing.T) {
	p := Policy{Initial: 100 * time.Millisecond, Max: time.Second, Jitter: 0.5}
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := p.Next(2)
		if d < 100*time.Millisecond || d > 200*time.Millisecond {
			t.Fatalf("jittered delay %v outside [100ms, 200ms]", d)
		}
		seen[d] = true
	}
	if len(seen) < 10 {
		t.Fatalf("jitter produced %d distinct delays in 1000", len(seen))
	}
	if got := p.Ceiling(2); got != 200*time.Millisecond {
		t.Fatalf("Ceiling(2) = %v", got)
	}
}

func TestPolicyValidate(t *testing.T) {
	good := Policy{Initial: time.Millisecond, Max: time.Second, Multiplier: 1, Jitter: 1}
	if err := good.Validate(); err != nil {
		t.Fatalf("Validate(%+v) = %v", good, err)
	}
	for name, p := range map[string]Policy{
		"zero":             {},
		"max below":        {Initial: time.Second, Max: time.Millisecond},
		"multiplier below": {Initial: 1, Max: 2, Multiplier: 0.5},
		"multiplier NaN":   {Initial: 1, Max: 2, Multiplier: math.NaN()},
		"jitter above":     {Initial: 1, Max: 2, Jitter: 1.5},
		"jitter negative":  {Initial: 1, Max: 2, Jitter: -0.1},
		"jitter NaN":       {Initial: 1, Max: 2, Jitter: math.NaN()},
	} {
		if err := p.Validate(); err == nil {
			t.Errorf("%s: Validate(%+v) = nil", name, p)
		}
	}
}

func TestBackoffCountsFailuresAndResets(t *testing.T) {
	b := New(Policy{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond})
	var got []time.Duration
	for range 5 {
		got = append(got, b.Next())
	}
	want := []time.Duration{10, 20, 40, 50, 50}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("delay %d = %v, want %v (all: %v)", i, got[i], want[i]*time.Millisecond, got)
		}
	}
	if b.Failures() != 5 {
		t.Fatalf("Failures = %d", b.Failures())
	}
	b.Reset()
	if d := b.Next(); d != 10*time.Millisecond {
		t.Fatalf("after Reset: %v", d)
	}
}

func TestRetry(t *testing.T) {
	p := Policy{Initial: time.Millisecond, Max: 2 * time.Millisecond}
	ctx := context.Background()
	calls := 0
	err := Retry(ctx, p, func(_ context.Context, attempt int) error {
		calls++
		if attempt != calls {
			t.Fatalf("attempt %d on call %d", attempt, calls)
		}
		if attempt < 3 {
			return errors.New("transient")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("Retry = %v after %d calls, want nil after 3", err, calls)
	}

	final := errors.New("final")
	calls = 0
	err = Retry(ctx, p, func(context.Context, int) error { calls++; return Stop(final) })
	if err != final || calls != 1 {
		t.Fatalf("Retry with Stop = %v after %d calls, want the error itself after 1", err, calls)
	}
	if Stop(nil) != nil {
		t.Fatal("Stop(nil) != nil")
	}

	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	last := errors.New("still failing")
	err = Retry(cctx, p, func(context.Context, int) error { return last })
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, last) {
		t.Fatalf("Retry after the deadline = %v, want the deadline and the last error", err)
	}
}

func TestSleepStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Sleep(ctx, time.Hour); err != context.Canceled {
		t.Fatalf("Sleep on a cancelled context = %v", err)
	}
	if err := Sleep(context.Background(), time.Millisecond); err != nil {
		t.Fatalf("Sleep = %v", err)
	}
}
