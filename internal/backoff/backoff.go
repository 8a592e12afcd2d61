// Package backoff holds the exponential backoff and the context-aware sleep
// that eskit's long-running workers (relays, projection runners, process
// managers) share.
package backoff

import (
	"context"
	"time"
)

// Backoff doubles a delay from Min up to Max. It is not safe for concurrent
// use; each worker loop keeps its own.
type Backoff struct {
	Min, Max time.Duration
	cur      time.Duration
}

// New returns a Backoff starting at minDelay and capped at maxDelay.
func New(minDelay, maxDelay time.Duration) *Backoff {
	return &Backoff{Min: minDelay, Max: max(minDelay, maxDelay), cur: minDelay}
}

// Next returns the current delay and doubles it for the next call.
func (b *Backoff) Next() time.Duration {
	if b.cur <= 0 {
		b.cur = b.Min
	}
	d := b.cur
	b.cur = min(b.cur*2, b.Max)
	return d
}

// Sleep waits for the next delay, or until ctx ends (then it returns ctx's
// error).
func (b *Backoff) Sleep(ctx context.Context) error { return Sleep(ctx, b.Next()) }

// Reset starts the delays over from Min.
func (b *Backoff) Reset() { b.cur = b.Min }

// Sleep waits for d, or until ctx ends (then it returns ctx's error).
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
