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
// included) and outcome: Debug for success (queries are frequent), Warn for
// unknown queries and consistency timeouts, Error otherwise. A nil logger
// means slog.Default().
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
				level := slog.LevelError
				if errors.Is(err, ErrUnknownQuery) || errors.Is(err, ErrConsistencyTimeout) {
					level = slog.LevelWarn
				}
				attrs = append(attrs, slog.String("outcome", "error"), slog.Any("error", err))
				l.LogAttrs(ctx, level, "query failed", attrs...)
				return res, err
			}
			attrs = append(attrs, slog.String("outcome", "ok"))
			l.LogAttrs(ctx, slog.LevelDebug, "query answered", attrs...)
			return res, nil
		}
	}
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
	return func(next Handler) Handler {
		return func(ctx context.Context, q any) (any, error) {
			ctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			return next(ctx, q)
		}
	}
}
