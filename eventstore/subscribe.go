package eventstore

import (
	"context"
	"errors"
	"iter"
)

// DefaultBatchSize is the page size catch-up reads use.
const DefaultBatchSize = 1000

// WaitFunc blocks until records after the given Position may have become
// visible on the feed, or ctx ends. It may return early (spurious wake-ups
// are harmless); it returns ctx's error when ctx ends.
type WaitFunc func(ctx context.Context, after Position) error

// CatchUp is the catch-up subscription stores build Subscribe on: it pages
// through feed after the given Position and, once caught up, calls wait
// before reading again. It stops silently when ctx ends.
func CatchUp(ctx context.Context, feed FeedReader, after Position, batch int, wait WaitFunc) iter.Seq2[Record, error] {
	if batch <= 0 {
		batch = DefaultBatchSize
	}
	return func(yield func(Record, error) bool) {
		pos := after
		for {
			recs, err := feed.ReadAll(ctx, pos, batch)
			if err != nil {
				if ctx.Err() == nil {
					yield(Record{}, err)
				}
				return
			}
			for _, r := range recs {
				if !yield(r, nil) {
					return
				}
				pos = r.Position
			}
			if len(recs) == batch {
				continue
			}
			if err := wait(ctx, pos); err != nil {
				if ctx.Err() == nil && !errors.Is(err, context.Canceled) {
					yield(Record{}, err)
				}
				return
			}
		}
	}
}

// Collect drains a record iterator into a slice, stopping at the first error.
func Collect(seq iter.Seq2[Record, error]) ([]Record, error) {
	var out []Record
	for r, err := range seq {
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}
