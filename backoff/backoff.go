// Package backoff is eskit's one retry schedule. A Policy says how long to
// wait after each failure (exponential, capped, with jitter), Retry runs a
// function under it, and Backoff keeps a Policy's place in a loop that
// retries by itself.
//
// Every part of eskit that retries takes a Policy: the repository's
// conflict retries (aggregate.WithBackoff), the command bus's Retry
// middleware (commandbus.RetryPolicy.Backoff), the relay
// (outbox.WithBackoffPolicy), the projection runner
// (projection.WithBackoffPolicy), the PostgreSQL store's listener and the
// Redis idempotency store's wait for a command in flight. (outbox.BackoffPolicy
// and projection.BackoffPolicy are aliases of Policy.)
package backoff

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// Policy is an exponential backoff with jitter: after the n-th failure in a
// row (n from 1) the delay is Initial·Multiplierⁿ⁻¹, capped at Max, of which
// the fraction Jitter is random: a delay d becomes a uniformly random
// duration in [d·(1−Jitter), d]. The zero Multiplier means 2; the zero
// Jitter means none. The zero Policy's delays are zero.
type Policy struct {
	// Initial is the delay after the first failure.
	Initial time.Duration
	// Max caps the delay.
	Max time.Duration
	// Multiplier is the growth of the delay from one failure to the next
	// (2 when zero; at least 1 otherwise).
	Multiplier float64
	// Jitter, from 0 to 1, is the random fraction of each delay, so that
	// workers that failed together do not retry together.
	Jitter float64
}

// Validate reports a policy that cannot be used: 0 < Initial <= Max,
// Multiplier 0 or at least 1, Jitter from 0 to 1. Long-running workers
// refuse the zero Policy (it would retry a lasting failure in a busy
// loop); a bounded retry loop may accept it to mean "at once".
func (p Policy) Validate() error {
	switch {
	case p.Initial <= 0 || p.Max < p.Initial:
		return fmt.Errorf("backoff needs 0 < initial (%s) <= max (%s)", p.Initial, p.Max)
	case p.Multiplier != 0 && (p.Multiplier < 1 || math.IsNaN(p.Multiplier) || math.IsInf(p.Multiplier, 0)):
		return fmt.Errorf("backoff multiplier %v: want at least 1 (or 0 for 2)", p.Multiplier)
	case !(p.Jitter >= 0 && p.Jitter <= 1):
		return fmt.Errorf("backoff jitter %v: want 0 to 1", p.Jitter)
	}
	return nil
}

// Next returns the delay after the attempt-th failure in a row (attempt
// from 1; smaller counts as 1), jittered.
func (p Policy) Next(attempt int) time.Duration {
	d := p.Ceiling(attempt)
	if p.Jitter > 0 && d > 0 {
		d -= time.Duration(rand.Float64() * p.Jitter * float64(d))
	}
	return d
}

// Ceiling returns the delay after the attempt-th failure before jitter:
// the longest Next(attempt) can return.
func (p Policy) Ceiling(attempt int) time.Duration {
	m := p.Multiplier
	if m == 0 {
		m = 2
	}
	attempt = max(attempt, 1)
	d := float64(p.Initial) * math.Pow(m, float64(attempt-1))
	if math.IsNaN(d) || d >= float64(p.Max) {
		return max(p.Max, p.Initial)
	}
	return time.Duration(d)
}

// stopError marks an error Retry must not retry.
type stopError struct{ err error }

func (e *stopError) Error() string { return e.err.Error() }
func (e *stopError) Unwrap() error { return e.err }

// Stop marks err as final: Retry returns it (unmarked) at once. Stop(nil)
// is nil.
func Stop(err error) error {
	if err == nil {
		return nil
	}
	return &stopError{err: err}
}

// Retry calls fn, with attempt counting from 1, until it returns nil or an
// error marked with Stop, waiting p.Next(attempt) after each failure. It
// returns nil, the error given to Stop, or, when ctx ends first, ctx's
// error wrapped together with fn's last error (errors.Is finds both).
func Retry(ctx context.Context, p Policy, fn func(ctx context.Context, attempt int) error) error {
	var last error
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			if last != nil {
				return fmt.Errorf("%w (last error: %w)", err, last)
			}
			return err
		}
		last = fn(ctx, attempt)
		if last == nil {
			return nil
		}
		var se *stopError
		if errors.As(last, &se) {
			return se.err
		}
		if err := Sleep(ctx, p.Next(attempt)); err != nil {
			return fmt.Errorf("%w (last error: %w)", err, last)
		}
	}
}

// Backoff is a Policy's place in one retry loop: the failures in a row
// since the last Reset. It is not safe for concurrent use; each loop keeps
// its own.
type Backoff struct {
	Policy   Policy
	failures int
}

// New returns a Backoff of p.
func New(p Policy) *Backoff { return &Backoff{Policy: p} }

// Next counts a failure and returns the delay to wait after it.
func (b *Backoff) Next() time.Duration {
	b.failures++
	return b.Policy.Next(b.failures)
}

// Failures returns the failures counted since the last Reset.
func (b *Backoff) Failures() int { return b.failures }

// Sleep counts a failure and waits for its delay, or until ctx ends (then
// it returns ctx's error).
func (b *Backoff) Sleep(ctx context.Context) error { return Sleep(ctx, b.Next()) }

// Reset starts the delays over from Initial: the loop succeeded.
func (b *Backoff) Reset() { b.failures = 0 }

// Sleep waits for d, or until ctx ends (then it returns ctx's error).
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
