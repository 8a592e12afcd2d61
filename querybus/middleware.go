package querybus

import (
	"context"
	"errors"
	"github.com/eskit/eskit/internal/values"
	"log/slog"
	"maps"
	"slices"
	"time"
)

// Logging logs every query with its type, duration (read-your-writes wait
// included) and outcome: Debug for success (queries are frequent), Info for
// errors with a NotFound() bool method that returns true (outcome
// not_found), Warn for unknown queries, consistency timeouts and errors
// with a Temporary() bool method that returns true (a read model being
// rebuilt; outcome unavailable), Error otherwise. A nil logger means
// slog.Default().
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
				level, outcome := slog.LevelError, "error"
				var (
					nf  notFound
					tmp temporary
				)
				switch {
				case errors.As(err, &nf) && nf.NotFound():
					// The caller asked for something that does not exist:
					// an answer, not a fault.
					level, outcome = slog.LevelInfo, "not_found"
				case errors.Is(err, ErrUnknownQuery) || errors.Is(err, ErrConsistencyTimeout):
					level = slog.LevelWarn
				case errors.As(err, &tmp) && tmp.Temporary():
					level, outcome = slog.LevelWarn, "unavailable"
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

// temporary is implemented by errors of a read model that cannot answer for
// now (projection.NotReadyError): Logging logs them at Warn.
type temporary interface{ Temporary() bool }

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
	return func(next Handler) Handler {
		return func(ctx context.Context, q any) (any, error) {
			ctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			return next(ctx, q)
		}
	}
}
