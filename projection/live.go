package projection

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/outbox"
)

// ensureConsumer returns the projection's durable pull consumer, creating
// it (delivering new messages only: the store's feed provides the history)
// when it does not exist.
func (r *Runner) ensureConsumer(ctx context.Context, pr *proj) (jetstream.Consumer, error) {
	name := ConsumerName(r.cfg.consumerPrefix, pr.name)
	c, err := r.cfg.js.Consumer(ctx, r.cfg.stream, name)
	if err == nil {
		return c, nil
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("projection %q: look up consumer %s: %w", pr.name, name, err)
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "eskit projection " + pr.name,
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       r.cfg.ackWait,
		MaxAckPending: max(4*r.cfg.batchSize, 10000),
		FilterSubject: r.cfg.filter,
	}
	c, err = r.cfg.js.CreateConsumer(ctx, r.cfg.stream, cfg)
	if errors.Is(err, jetstream.ErrConsumerExists) {
		c, err = r.cfg.js.Consumer(ctx, r.cfg.stream, name)
	}
	if err != nil {
		return nil, fmt.Errorf("projection %q: create consumer %s: %w", pr.name, name, err)
	}
	return c, nil
}

// liveCursor tracks what the live side has seen of the stream.
type liveCursor struct {
	lastSeq uint64 // last stream sequence seen
	// verify makes the next new record be checked against the store's feed
	// before it is applied: at the start of a session, after a hole in the
	// stream sequence and after a message that could not be decoded.
	verify bool
}

// live applies batches of messages from the durable consumer until ctx
// ends or a batch fails. The client keeps a buffer of messages filled in
// the background, so fetching overlaps applying. A batch takes the messages
// that are there, up to the batch size, waiting for more until the max wait
// has passed since its first one; it is acknowledged (AckAll) after its
// commit.
func (r *Runner) live(ctx context.Context, pr *proj, cons jetstream.Consumer) error {
	it, err := cons.Messages(jetstream.PullMaxMessages(2 * r.cfg.batchSize))
	if err != nil {
		return fmt.Errorf("projection %q: consume: %w", pr.name, err)
	}
	defer it.Stop()
	cur := liveCursor{verify: true}
	msgs := make([]jetstream.Msg, 0, r.cfg.batchSize)
	for ctx.Err() == nil {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("projection %q: consume: %w", pr.name, err)
		}
		msgs = append(msgs[:0], m)
		// The batch closes maxWait after its first message at the latest:
		// waiting for a pause of maxWait instead would let a steady stream
		// (a message every less than maxWait) hold it open until full.
		deadline := time.Now().Add(r.cfg.maxWait)
		for len(msgs) < r.cfg.batchSize {
			wait := time.Until(deadline)
			if wait <= 0 {
				break
			}
			m, err := it.Next(jetstream.NextMaxWait(wait))
			if err != nil {
				if errors.Is(err, nats.ErrTimeout) {
					break
				}
				return fmt.Errorf("projection %q: consume: %w", pr.name, err)
			}
			msgs = append(msgs, m)
		}
		pr.mu.Lock()
		err = r.liveBatch(ctx, pr, msgs, &cur)
		pr.mu.Unlock()
		if err != nil {
			return err
		}
		if err := msgs[len(msgs)-1].Ack(); err != nil {
			// Unacknowledged messages come back and are skipped.
			r.log.Warn("projection: ack", "projection", pr.name, "err", err)
		}
	}
	return nil
}

// liveBatch applies the new records among msgs to the active namespace. The
// caller holds pr.mu.
func (r *Runner) liveBatch(ctx context.Context, pr *proj, msgs []jetstream.Msg, cur *liveCursor) error {
	st, _, err := pr.activeState()
	if err != nil {
		return err
	}
	recs := make([]eventstore.Record, 0, len(msgs))
	last := st.ckpt.pos
	flush := func() error {
		if len(recs) == 0 {
			return nil
		}
		err := r.applyBatch(ctx, pr, st, recs)
		recs = recs[:0]
		return err
	}
	for _, m := range msgs {
		if md, err := m.Metadata(); err == nil {
			seq := md.Sequence.Stream
			if cur.lastSeq != 0 && seq > cur.lastSeq+1 {
				cur.verify = true
			}
			cur.lastSeq = max(cur.lastSeq, seq)
		} else {
			cur.verify = true
		}
		rec, err := outbox.DecodeMsg(m.Subject(), m.Headers(), m.Data())
		if err != nil {
			// The store's feed will provide the record: check it before
			// the next record is applied.
			r.log.Warn("projection: undecodable message", "projection", pr.name, "subject", m.Subject(), "err", err)
			cur.verify = true
			continue
		}
		if !rec.Position.After(last) {
			continue // applied already (redelivery or duplicate)
		}
		if cur.verify {
			if err := flush(); err != nil {
				return err
			}
			if err := r.closeGap(ctx, pr, st, rec.Position); err != nil {
				return err
			}
			cur.verify = false
			last = st.ckpt.pos
			if !rec.Position.After(last) {
				continue
			}
		}
		recs = append(recs, rec)
		last = rec.Position
	}
	return flush()
}

// closeGap makes sure nothing of the feed between st's checkpoint and pos
// is missing before the record at pos is applied: when the feed has an
// earlier record the stream did not deliver, the feed is applied up to pos.
func (r *Runner) closeGap(ctx context.Context, pr *proj, st *nsState, pos eventstore.Position) error {
	next, err := r.feed.ReadAll(ctx, st.ckpt.pos, 1)
	if err != nil {
		return fmt.Errorf("projection %q: read feed: %w", pr.name, err)
	}
	if len(next) == 0 || !next[0].Position.Before(pos) {
		return nil
	}
	r.log.Info("projection: catching up from the store", "projection", pr.name,
		"from", st.ckpt.pos.String(), "to", pos.String())
	return r.catchUpTo(ctx, pr, st, pos)
}
