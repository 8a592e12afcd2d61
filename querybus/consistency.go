package querybus

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/internal/values"
)

type minPositionsKey struct{}

// WithMinPosition returns a context that makes queries wait until the
// projection has processed the feed up to pos (for example a command's
// Result.Position). An empty projection name stands for every projection
// the query reads from (see ReadsFrom). Requirements add up; for the same
// projection the later position wins if it is after the earlier one. A
// zero pos requires nothing.
func WithMinPosition(ctx context.Context, projection string, pos eventstore.Position) context.Context {
	if pos.IsZero() {
		return ctx
	}
	prev := MinPositions(ctx)
	if cur, ok := prev[projection]; ok && !pos.After(cur) {
		return ctx
	}
	next := make(map[string]eventstore.Position, len(prev)+1)
	maps.Copy(next, prev)
	next[projection] = pos
	return context.WithValue(ctx, minPositionsKey{}, next)
}

// MinPositions returns the positions the context requires, by projection
// ("" for the query's own projections). The map must not be modified.
func MinPositions(ctx context.Context) map[string]eventstore.Position {
	m, _ := ctx.Value(minPositionsKey{}).(map[string]eventstore.Position)
	return m
}

// targets resolves the context's requirements for a query reading from
// reads into positions per projection.
func targets(req map[string]eventstore.Position, reads []string) (map[string]eventstore.Position, bool) {
	out := make(map[string]eventstore.Position, len(req)+len(reads))
	for p, pos := range req {
		if p != "" {
			out[p] = pos
		}
	}
	own, ok := req[""]
	if !ok {
		return out, true
	}
	if len(reads) == 0 {
		return nil, false
	}
	for _, p := range reads {
		if cur, ok := out[p]; !ok || own.After(cur) {
			out[p] = own
		}
	}
	return out, true
}

// waitFor waits until every projection the context requires for q has
// reached its position.
func (b *Bus) waitFor(ctx context.Context, q any, e *entry) error {
	req := MinPositions(ctx)
	if len(req) == 0 {
		return nil
	}
	want, ok := targets(req, e.reads)
	if !ok {
		return fmt.Errorf("%w: %s requires position %s of its projections but was registered without ReadsFrom",
			ErrNoProjection, values.TypeName(q), req[""])
	}
	if b.waiter == nil {
		return fmt.Errorf("%w: %s requires projection positions", ErrNoWaiter, values.TypeName(q))
	}
	if _, has := ctx.Deadline(); !has {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.waitTimeout)
		defer cancel()
	}
	start := time.Now()
	for _, p := range slices.Sorted(maps.Keys(want)) {
		pos := want[p]
		err := b.waiter.WaitFor(ctx, p, pos)
		if err == nil {
			continue
		}
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return &ConsistencyTimeoutError{Query: values.TypeName(q), Projection: p, Want: pos, Waited: time.Since(start), Err: err}
		}
		return fmt.Errorf("querybus: %s: wait for projection %q to reach %s: %w", values.TypeName(q), p, pos, err)
	}
	return nil
}
