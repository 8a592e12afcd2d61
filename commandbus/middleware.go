package commandbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/internal/values"
)

// Logging logs every command with its type, ID (when it has one), duration
// and outcome, named as the eskit_commands_total metric names it (ok,
// duplicate, rejected, conflict, unknown, error): Info for success and for
// commands a decider rejected (aggregate.ErrRejected: a business rule said
// no), Warn for invalid commands (validation, unknown type, a command ID
// reused for another command: eventstore.ErrDuplicateEvent), concurrency
// conflicts and writes whose outcome is unknown or that may succeed on a
// retry, Error otherwise. A nil logger means slog.Default().
func Logging(logger *slog.Logger) Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, cmd any) (Result, error) {
			l := logger
			if l == nil {
				l = slog.Default()
			}
			start := time.Now()
			res, err := next(ctx, cmd)
			attrs := []slog.Attr{
				slog.String("command", values.TypeName(cmd)),
				slog.Duration("duration", time.Since(start)),
			}
			if id, ok := CommandIDOf(ctx, cmd); ok {
				attrs = append(attrs, slog.String("command_id", id.String()))
			}
			if err != nil {
				// The outcome is named as eskit_commands_total counts it.
				outcome := commandOutcome(res, err)
				level, msg := slog.LevelError, "command failed"
				switch {
				case errors.Is(err, aggregate.ErrRejected):
					// A business rule said no: the system works as intended.
					level, msg = slog.LevelInfo, "command rejected"
				case errors.Is(err, ErrValidation) || errors.Is(err, eventstore.ErrDuplicateEvent):
					// The caller's mistake: an invalid command, or a
					// command ID reused for another command.
					level, msg = slog.LevelWarn, "command rejected"
				case errors.Is(err, ErrUnknownCommand) || errors.Is(err, eventstore.ErrConcurrency) ||
					errors.Is(err, eventstore.ErrOutcomeUnknown) || errors.Is(err, eventstore.ErrTransient):
					level = slog.LevelWarn
				}
				attrs = append(attrs, slog.String("outcome", outcome), slog.Any("error", err))
				l.LogAttrs(ctx, level, msg, attrs...)
				return res, err
			}
			attrs = append(attrs, slog.String("outcome", commandOutcome(res, nil)))
			if res.StreamID != "" {
				attrs = append(attrs, slog.String("stream", res.StreamID), slog.Int64("version", res.Version))
			}
			if !res.Position.IsZero() {
				attrs = append(attrs, slog.String("position", res.Position.String()))
			}
			l.LogAttrs(ctx, slog.LevelInfo, "command handled", attrs...)
			return res, nil
		}
	}
}

// Validator is implemented by commands that can check themselves.
type Validator interface {
	Validate() error
}

// Validation rejects commands whose Validate method (see Validator) returns
// an error, with a *ValidationError matching ErrValidation; the handler does
// not run. Commands without the method pass.
func Validation() Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, cmd any) (Result, error) {
			if v, ok := cmd.(Validator); ok {
				if err := v.Validate(); err != nil {
					return Result{}, &ValidationError{Command: values.TypeName(cmd), Err: err}
				}
			}
			return next(ctx, cmd)
		}
	}
}

// Timeout gives the rest of the chain a context whose deadline is at most d
// away (an earlier deadline of the caller's stays). The timeout is
// cooperative: the handler, and the store it calls, must honour the context.
// A handler that stopped because of the deadline returns an error matching
// context.DeadlineExceeded.
func Timeout(d time.Duration) Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, cmd any) (Result, error) {
			ctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			return next(ctx, cmd)
		}
	}
}

// RetryPolicy bounds the Retry middleware. Zero fields take the defaults.
type RetryPolicy struct {
	// MaxAttempts is the number of attempts, the first included (default 3).
	MaxAttempts int
	// BaseDelay is the backoff before the second attempt (default 10ms); it
	// doubles with every attempt, up to MaxDelay (default 500ms). Each delay
	// is jittered: a random duration between half of it and all of it.
	BaseDelay time.Duration
	MaxDelay  time.Duration
	// Retryable selects the errors worth another attempt (default
	// eventstore.IsRetryable: concurrency conflicts).
	Retryable func(error) bool
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = 3
	}
	if p.BaseDelay <= 0 {
		p.BaseDelay = 10 * time.Millisecond
	}
	if p.MaxDelay <= 0 {
		p.MaxDelay = 500 * time.Millisecond
	}
	if p.MaxDelay < p.BaseDelay {
		p.MaxDelay = p.BaseDelay
	}
	if p.Retryable == nil {
		p.Retryable = eventstore.IsRetryable
	}
	return p
}

// delay returns the jittered backoff after the given failed attempt
// (1-based).
func (p RetryPolicy) delay(attempt int) time.Duration {
	d := p.MaxDelay
	if shift := attempt - 1; shift < 30 {
		if e := p.BaseDelay << shift; e < d {
			d = e
		}
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// Retry runs the rest of the chain again when it fails with a retryable
// error (by default a concurrency conflict, eventstore.ErrConcurrency), up
// to p.MaxAttempts attempts with jittered exponential backoff. It stops
// early when the context ends. When every attempt fails, the last error is
// returned, wrapped.
func Retry(p RetryPolicy) Middleware {
	p = p.withDefaults()
	return func(next Handler) Handler {
		return func(ctx context.Context, cmd any) (Result, error) {
			for attempt := 1; ; attempt++ {
				res, err := next(ctx, cmd)
				if err == nil || !p.Retryable(err) {
					return res, err
				}
				if attempt >= p.MaxAttempts {
					return res, fmt.Errorf("commandbus: %s: giving up after %d attempts: %w", values.TypeName(cmd), attempt, err)
				}
				t := time.NewTimer(p.delay(attempt))
				select {
				case <-ctx.Done():
					t.Stop()
					return res, fmt.Errorf("commandbus: %s: retry abandoned: %w (last error: %w)", values.TypeName(cmd), context.Cause(ctx), err)
				case <-t.C:
				}
			}
		}
	}
}
