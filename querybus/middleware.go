package querybus

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/eskit/eskit/internal/dispatch"
	"github.com/eskit/eskit/internal/values"
	"github.com/eskit/eskit/telemetry"
)

// Logging logs every query with its type, duration (read-your-writes wait
// included) and outcome, named as Outcome names it (and Telemetry counts
// it): Debug for success (queries are frequent), Info for not_found and
// invalid (the caller's input), Warn for unavailable (a read model being
// rebuilt, a consistency timeout) and unknown queries, Error otherwise. A
// nil logger means slog.Default().
func Logging(logger *slog.Logger) Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, q any) (any, error) {
			l := logger
			if l == nil {
				l = slog.Default()
			}
			start := time.Now()
			res, err := next(ctx, q)
			attrs := []slog.Attr{
				slog.String("query", values.TypeName(q)),
				slog.Duration("duration", time.Since(start)),
			}
			req := MinPositions(ctx)
			for _, p := range slices.Sorted(maps.Keys(req)) {
				attrs = append(attrs, slog.String("min_position"+projectionSuffix(p), req[p].String()))
			}
			if err != nil {
				outcome := Outcome(err)
				level := slog.LevelError
				switch outcome {
				case telemetry.OutcomeNotFound, telemetry.OutcomeInvalid:
					// The caller asked for something that does not exist,
					// or asked wrongly: an answer, not a fault.
					level = slog.LevelInfo
				case telemetry.OutcomeUnavailable:
					level = slog.LevelWarn
				default:
					if errors.Is(err, ErrUnknownQuery) {
						level = slog.LevelWarn
					}
				}
				attrs = append(attrs, slog.String("outcome", outcome), slog.Any("error", err))
				l.LogAttrs(ctx, level, "query failed", attrs...)
				return res, err
			}
			attrs = append(attrs, slog.String("outcome", "ok"))
			l.LogAttrs(ctx, slog.LevelDebug, "query answered", attrs...)
			return res, nil
		}
	}
}

// notFound is implemented by errors that mean "there is no such thing"
// (an unknown account, say): Logging logs them at Info.
type notFound interface{ NotFound() bool }

// invalidArgument is implemented by errors that mean "the query itself is
// wrong" (a page size out of range, say): Logging logs them at Info.
type invalidArgument interface{ InvalidArgument() bool }

// temporary is implemented by errors of a read model that cannot answer for
// now (projection.NotReadyError): Logging logs them at Warn.
type temporary interface{ Temporary() bool }

// Outcome names the outcome of a query that failed with err, as Logging
// logs it and Telemetry counts it: telemetry.OutcomeNotFound for errors
// with a NotFound() bool method returning true, OutcomeInvalid for
// InvalidArgument() bool, OutcomeUnavailable for Temporary() bool and
// consistency timeouts, OutcomeError otherwise (and OutcomeOK for nil).
func Outcome(err error) string {
	var (
		nf  notFound
		inv invalidArgument
		tmp temporary
	)
	switch {
	case err == nil:
		return telemetry.OutcomeOK
	case errors.As(err, &nf) && nf.NotFound():
		return telemetry.OutcomeNotFound
	case errors.As(err, &inv) && inv.InvalidArgument():
		return telemetry.OutcomeInvalid
	case errors.Is(err, ErrConsistencyTimeout), errors.As(err, &tmp) && tmp.Temporary():
		return telemetry.OutcomeUnavailable
	}
	return telemetry.OutcomeError
}

func projectionSuffix(p string) string {
	if p == "" {
		return ""
	}
	return "." + p
}

// Timeout gives the rest of the chain, the read-your-writes wait included,
// a context whose deadline is at most d away (an earlier deadline of the
// caller's stays).
func Timeout(d time.Duration) Middleware {
	return dispatch.Timeout[any, Handler](d)
}
