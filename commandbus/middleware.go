package commandbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/internal/dispatch"
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
	return dispatch.Timeout[Result, Handler](d)
}

// RetryPolicy bounds the Retry middleware. Zero fields take the defaults.
type RetryPolicy struct {
	// MaxAttempts is the number of attempts, the first included (default 3).
	MaxAttempts int
	// Backoff is the delay between attempts (default DefaultRetryBackoff:
	// 10 ms doubling up to 500 ms, half of each delay random).
	Backoff backoff.Policy
	// Retryable selects the errors worth another attempt (default
	// eventstore.IsRetryable: concurrency conflicts and transient
	// failures). It is not asked about errors retried already (see Retry).
	Retryable func(error) bool
}

// DefaultRetryBackoff is the Retry middleware's default delay between
// attempts.
var DefaultRetryBackoff = backoff.Policy{Initial: 10 * time.Millisecond, Max: 500 * time.Millisecond, Multiplier: 2, Jitter: 0.5}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = 3
	}
	if p.Backoff == (backoff.Policy{}) {
		p.Backoff = DefaultRetryBackoff
	}
	if p.Retryable == nil {
		p.Retryable = eventstore.IsRetryable
	}
	return p
}

// Retry runs the rest of the chain again when it fails with a retryable
// error (by default a concurrency conflict, eventstore.ErrConcurrency, or a
// transient failure, eventstore.ErrTransient), up to p.MaxAttempts attempts
// with jittered exponential backoff. It stops early when the context ends.
// When every attempt fails, the last error is returned, wrapped.
//
// Retries compose instead of multiplying: an error that reports it was
// retried already is returned at once, whatever p.Retryable says. Such an
// error has, in its chain (errors.As), a method Retried() bool that returns
// true. The aggregate repository's conflict after its own retries ran out
// (*aggregate.RetriesExhaustedError) is one, and so is Retry's own error
// when it gives up, for a Retry further out. So under a Retry of 3 attempts
// a repository with its default of 10 (aggregate.DefaultMaxRetries + 1)
// makes 10 appends per command at most, not 30, and its conflicts are
// answered as soon as it gives up. The bus still retries what the repository does not:
// transient failures, and the conflicts of a repository whose retries are
// off (aggregate.WithMaxRetries(0)), which is how to have the bus retry
// conflicts instead, around the whole handler.
func Retry(p RetryPolicy) Middleware {
	p = p.withDefaults()
	return func(next Handler) Handler {
		return func(ctx context.Context, cmd any) (Result, error) {
			for attempt := 1; ; attempt++ {
				res, err := next(ctx, cmd)
				if err == nil || retried(err) || !p.Retryable(err) {
					return res, err
				}
				if attempt >= p.MaxAttempts {
					return res, &retriesExhausted{command: values.TypeName(cmd), attempts: attempt, err: err}
				}
				if backoff.Sleep(ctx, p.Backoff.Next(attempt)) != nil {
					return res, fmt.Errorf("commandbus: %s: retry abandoned: %w (last error: %w)", values.TypeName(cmd), context.Cause(ctx), err)
				}
			}
		}
	}
}

// retried reports whether err says it was retried already (see Retry).
func retried(err error) bool {
	var r interface{ Retried() bool }
	return errors.As(err, &r) && r.Retried()
}

// retriesExhausted is Retry's error when every attempt failed.
type retriesExhausted struct {
	command  string
	attempts int
	err      error
}

func (e *retriesExhausted) Error() string {
	return fmt.Sprintf("commandbus: %s: giving up after %d attempts: %v", e.command, e.attempts, e.err)
}

func (e *retriesExhausted) Unwrap() error { return e.err }

// Retried reports whether more than one attempt was made.
func (e *retriesExhausted) Retried() bool { return e.attempts > 1 }
