package outbox

import (
	"context"
	"errors"
	"iter"
	"time"

	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/eventstore"
)

// Subscriber is a feed that can tell when records after a Position appear
// (eventstore.Store is one). The relay uses it to wait for new events.
type Subscriber interface {
	Subscribe(ctx context.Context, after eventstore.Position) iter.Seq2[eventstore.Record, error]
}

// pollSchedule is how a relay polls a feed that gives no wake-ups: from 5 ms
// doubling to 250 ms while nothing new appears.
var pollSchedule = backoff.Policy{Initial: 5 * time.Millisecond, Max: 250 * time.Millisecond}

// feedItem is one record of the followed feed, or the error that ended it.
type feedItem struct {
	rec eventstore.Record
	err error
}

// errFeedEnded reports a feed subscription that ended on its own.
var errFeedEnded = errors.New("outbox: feed subscription ended")

// follow reads the feed after the given Position in a goroutine and hands
// its records over, in feed order, on the returned channel, which is closed
// after an error or once ctx ends. It keeps up to a batch of records ready
// ahead of the publisher. The goroutine has returned once the channel is
// closed.
func (r *Relay) follow(ctx context.Context, after eventstore.Position) <-chan feedItem {
	ch := make(chan feedItem, r.cfg.batchSize)
	var seq iter.Seq2[eventstore.Record, error]
	switch {
	case r.cfg.wait != nil:
		seq = eventstore.CatchUp(ctx, r.feed, after, r.cfg.batchSize, r.cfg.wait)
	case r.sub != nil:
		seq = r.sub.Subscribe(ctx, after)
	default:
		seq = eventstore.CatchUp(ctx, r.feed, after, r.cfg.batchSize, pollWaiter())
	}
	go func() {
		defer close(ch)
		for rec, err := range seq {
			select {
			case ch <- feedItem{rec: rec, err: err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
		if ctx.Err() == nil {
			select {
			case ch <- feedItem{err: errFeedEnded}:
			case <-ctx.Done():
			}
		}
	}()
	return ch
}

// pollWaiter is the waiter of feeds that give no wake-ups: short adaptive
// polling (pollSchedule), starting over whenever the feed moved.
func pollWaiter() eventstore.WaitFunc {
	var last eventstore.Position
	idle := backoff.New(pollSchedule)
	return func(ctx context.Context, after eventstore.Position) error {
		if after != last {
			last = after
			idle.Reset()
		}
		return idle.Sleep(ctx)
	}
}
