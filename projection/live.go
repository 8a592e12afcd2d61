package projection

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/natsevent"
)

// liveSide is a partition's durable consumer and its message iterator.
type liveSide struct {
	it jetstream.MessagesContext
	// filtered: the server filters the partition's buckets; otherwise the
	// consumer sees other partitions' messages too (servers before 2.10
	// take one filter subject only) and the runner drops them.
	filtered bool
	// whole: the consumer sees the whole stream, so a hole in the stream
	// sequence is a message the runner did not get.
	whole bool
	// lastSeq is the highest stream sequence seen (by readLive).
	lastSeq uint64
}

func (l *liveSide) stop() { l.it.Stop() }

// openLive returns the partition's durable pull consumer, creating it
// (delivering new messages only: the store's feed provides the history)
// when it does not exist, and updating its filter when it changed.
func (r *Runner) openLive(ctx context.Context, pt *part) (*liveSide, error) {
	pr := pt.pr
	filters, filtered, err := r.partitionFilters(ctx, pt)
	if err != nil {
		return nil, err
	}
	name := partitionConsumerName(r.cfg.consumerPrefix, pr.name, pt.idx, pr.partitions)
	cfg := jetstream.ConsumerConfig{
		Durable:       name,
		Description:   fmt.Sprintf("eskit projection %s partition %d of %d", pr.name, pt.idx, pr.partitions),
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       r.cfg.ackWait,
		MaxAckPending: max(4*r.cfg.batchSize, 10000),
	}
	switch len(filters) {
	case 0:
	case 1:
		cfg.FilterSubject = filters[0]
	default:
		cfg.FilterSubjects = filters
	}
	c, err := r.cfg.js.Consumer(ctx, r.cfg.stream, name)
	switch {
	case err == nil:
		info := c.CachedInfo()
		have := info.Config.FilterSubjects
		if info.Config.FilterSubject != "" {
			have = []string{info.Config.FilterSubject}
		}
		if !slices.Equal(have, filters) {
			upd := info.Config
			upd.FilterSubject, upd.FilterSubjects = cfg.FilterSubject, cfg.FilterSubjects
			if c, err = r.cfg.js.UpdateConsumer(ctx, r.cfg.stream, upd); err != nil {
				return nil, fmt.Errorf("projection %q: update the filter of consumer %s: %w", pr.name, name, err)
			}
		}
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		c, err = r.cfg.js.CreateConsumer(ctx, r.cfg.stream, cfg)
		if errors.Is(err, jetstream.ErrConsumerExists) {
			c, err = r.cfg.js.Consumer(ctx, r.cfg.stream, name)
		}
		if err != nil {
			return nil, fmt.Errorf("projection %q: create consumer %s: %w", pr.name, name, err)
		}
	default:
		return nil, fmt.Errorf("projection %q: look up consumer %s: %w", pr.name, name, err)
	}
	it, err := c.Messages(jetstream.PullMaxMessages(2*r.cfg.batchSize), jetstream.PullHeartbeat(r.cfg.heartbeat))
	if err != nil {
		return nil, fmt.Errorf("projection %q: consume: %w", pr.name, err)
	}
	return &liveSide{it: it, filtered: filtered, whole: len(filters) == 0}, nil
}

// partitionFilters returns the subject filters of the partition's
// consumer, and whether they select exactly its messages.
func (r *Runner) partitionFilters(ctx context.Context, pt *part) ([]string, bool, error) {
	n := pt.pr.partitions
	if n == 1 {
		if r.cfg.filter == "" {
			return nil, true, nil
		}
		return []string{r.cfg.filter}, true, nil
	}
	base := r.cfg.filter
	if base == "" {
		s, err := r.cfg.js.Stream(ctx, r.cfg.stream)
		if err != nil {
			return nil, false, fmt.Errorf("projection %q: look up stream %s: %w", pt.pr.name, r.cfg.stream, err)
		}
		var relay []string
		for _, subj := range s.CachedInfo().Config.Subjects {
			if p, ok := strings.CutSuffix(subj, ".>"); ok && natsevent.ValidatePrefix(p) == nil {
				relay = append(relay, subj)
			}
		}
		if len(relay) != 1 {
			return nil, false, fmt.Errorf("projection %q: stream %s has subjects %v: set WithFilterSubject to the relay's \"<prefix>.>\"",
				pt.pr.name, r.cfg.stream, s.CachedInfo().Config.Subjects)
		}
		base = relay[0]
	}
	if err := natsevent.CheckJetStream(ctx, r.cfg.js, natsevent.FeatureMultiFilter); err != nil {
		if !errors.Is(err, natsevent.ErrUnsupported) {
			return nil, false, fmt.Errorf("projection %q: %w", pt.pr.name, err)
		}
		// Servers before 2.10 take one filter subject: every partition's
		// consumer sees the whole filter, and drops the others' messages.
		return []string{base}, false, nil
	}
	var out []string
	for b := range eventstore.StreamBuckets {
		if eventstore.BucketPartition(b, n) != pt.idx {
			continue
		}
		if f, ok := natsevent.NarrowFilter(base, b); ok {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		return nil, false, fmt.Errorf("projection %q: filter %q matches no subject of partition %d", pt.pr.name, base, pt.idx)
	}
	return out, true, nil
}

// runLive applies batches of messages from the partition's consumer until
// ctx ends or a batch fails, running maintain between batches. Fetching
// overlaps applying twice over: the client keeps a buffer of messages
// filled in the background, and a reader goroutine (readLive) takes and
// decodes the next batch while this one applies and commits the current
// one. A batch takes the messages that are there, up to the batch size,
// waiting for more until the max wait has passed since its first one; it
// is acknowledged (AckAll) after its commit.
func (r *Runner) runLive(ctx context.Context, pt *part, lv *liveSide, m *maintenance) error {
	rctx, cancel := context.WithCancel(ctx)
	batches := make(chan liveBatch, 1)
	// Record buffers go back to the reader once applied: one being
	// decoded, one waiting and one being applied.
	free := make(chan []eventstore.Record, 3)
	read := make(chan struct{})
	go func() {
		defer close(read)
		r.readLive(rctx, pt, lv, batches, free)
	}()
	defer func() {
		cancel()
		<-read
	}()
	idle := time.NewTimer(metaPoll)
	defer idle.Stop()
	for ctx.Err() == nil {
		wait := metaPoll
		if m.busy {
			wait = time.Millisecond
		}
		idle.Reset(wait)
		select {
		case b := <-batches:
			if b.err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("projection %q partition %d: consume: %w", pt.pr.name, pt.idx, b.err)
			}
			if b.verify {
				m.verifyNow = true
			}
			pt.mu.Lock()
			err := r.applyLive(ctx, pt, b.recs, m)
			pt.mu.Unlock()
			clear(b.recs)
			select {
			case free <- b.recs[:0]:
			default:
			}
			if err != nil {
				return err
			}
			if err := b.last.Ack(); err != nil {
				// Unacknowledged messages come back and are skipped.
				pt.log.Warn("projection: ack", "err", err)
			}
		case <-idle.C:
			// Idle: what the store holds beyond the checkpoint is either not
			// this partition's (the position advances over it, so waits for
			// positions in the whole model end) or was not delivered.
			m.verifyNow = true
		case <-pt.kick:
			// Poked: maintain reads the meta now.
		case <-ctx.Done():
			return nil
		}
		if err := r.maintain(ctx, pt, m, false); err != nil {
			return err
		}
	}
	return nil
}

// liveBatch is a batch of messages as readLive hands it over: the
// partition's records decoded from them, the last message (acknowledged
// once the batch is committed), and whether a message could not be decoded
// or the stream sequence of a whole-stream consumer has a hole (then the
// partition verifies against the store before the batch commits). err ends
// the reading.
type liveBatch struct {
	recs   []eventstore.Record
	last   jetstream.Msg
	verify bool
	err    error
}

// readLive takes batches of messages from the partition's consumer and
// decodes them, handing them to out until ctx ends or consuming fails (the
// error is the last batch). Record buffers come back through free.
func (r *Runner) readLive(ctx context.Context, pt *part, lv *liveSide, out chan<- liveBatch, free <-chan []eventstore.Record) {
	msgs := make([]jetstream.Msg, 0, r.cfg.batchSize)
	send := func(b liveBatch) bool {
		select {
		case out <- b:
			return true
		case <-ctx.Done():
			return false
		}
	}
	next := jetstream.NextContext(ctx)
	for {
		msg, err := lv.it.Next(next)
		if err != nil {
			if ctx.Err() == nil {
				send(liveBatch{err: err})
			}
			return
		}
		msgs = append(msgs[:0], msg)
		if err := r.collect(ctx, lv, &msgs); err != nil {
			send(liveBatch{err: err})
			return
		}
		var recs []eventstore.Record
		select {
		case recs = <-free:
		default:
			recs = make([]eventstore.Record, 0, r.cfg.batchSize)
		}
		b := r.decodeLive(pt, lv, msgs, recs)
		clear(msgs)
		if !send(b) {
			return
		}
	}
}

// collect adds to msgs the messages that arrive within the max wait after
// the first one, up to the batch size. Waiting for a pause of maxWait
// instead would let a steady stream hold a batch open until full.
//
// One deadline context serves the whole batch: a per-call max wait would
// start (and garbage) a timer for every message.
func (r *Runner) collect(ctx context.Context, lv *liveSide, msgs *[]jetstream.Msg) error {
	if len(*msgs) >= r.cfg.batchSize {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, r.cfg.maxWait)
	defer cancel()
	next := jetstream.NextContext(wctx)
	for len(*msgs) < r.cfg.batchSize {
		if wctx.Err() != nil {
			return nil
		}
		m, err := lv.it.Next(next)
		if err != nil {
			if errors.Is(err, jetstream.ErrNoHeartbeat) || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return err
			}
			return nil // timed out
		}
		*msgs = append(*msgs, m)
	}
	return nil
}

// decodeLive decodes the partition's records among msgs into recs. A
// message that cannot be decoded, or a hole in the stream sequence of a
// consumer of the whole stream, sets the batch's verify.
func (r *Runner) decodeLive(pt *part, lv *liveSide, msgs []jetstream.Msg, recs []eventstore.Record) liveBatch {
	b := liveBatch{last: msgs[len(msgs)-1]}
	for _, msg := range msgs {
		if lv.whole {
			if seq, ok := streamSequence(msg.Reply()); ok {
				if lv.lastSeq != 0 && seq > lv.lastSeq+1 {
					b.verify = true
				}
				lv.lastSeq = max(lv.lastSeq, seq)
			} else {
				b.verify = true
			}
		}
		if !lv.filtered && pt.pr.partitions > 1 {
			// Another partition's message (the server filters one subject
			// only): drop it before decoding. A subject without a bucket is
			// decoded, and fails, below.
			if bucket, ok := natsevent.SubjectBucket(msg.Subject()); ok && eventstore.BucketPartition(bucket, pt.pr.partitions) != pt.idx {
				continue
			}
		}
		rec, err := natsevent.DecodeMsg(msg.Subject(), msg.Headers(), msg.Data())
		if err != nil {
			// The store's feed has the record: verify before long.
			pt.log.Warn("projection: undecodable message", "subject", msg.Subject(), "err", err)
			b.verify = true
			continue
		}
		recs = append(recs, rec)
	}
	if !lv.filtered && pt.pr.partitions > 1 {
		// Keep the partition's records (in place, so the buffer is reused).
		kept := recs[:0]
		for _, rec := range recs {
			if eventstore.StreamPartition(rec.StreamID, pt.pr.partitions) == pt.idx {
				kept = append(kept, rec)
			}
		}
		clear(recs[len(kept):])
		recs = kept
	}
	b.recs = recs
	return b
}

// streamSequence returns a JetStream message's stream sequence, read
// from its reply (ack) subject as jetstream.Msg.Metadata reads it, without
// building the whole metadata: $JS.ACK.<stream>.<consumer>.<delivered>.
// <stream seq>.<consumer seq>.<time>.<pending> (9 tokens), or from newer
// servers $JS.ACK.<domain>.<account hash>.<stream>.… (at least 11).
func streamSequence(reply string) (uint64, bool) {
	rest, ok := strings.CutPrefix(reply, "$JS.ACK.")
	if !ok {
		return 0, false
	}
	skip := 0
	switch tokens := strings.Count(rest, ".") + 3; {
	case tokens == 9:
		skip = 3
	case tokens >= 11:
		skip = 5
	default:
		return 0, false
	}
	for range skip {
		_, rest, _ = strings.Cut(rest, ".")
	}
	tok, _, _ := strings.Cut(rest, ".")
	seq, err := strconv.ParseUint(tok, 10, 64)
	return seq, err == nil
}

// applyLive applies a batch of the partition's records from its consumer.
// When m.verifyNow is set (something was not delivered as it should), it
// first applies what the store's feed has up to the batch. The caller
// holds pt.mu.
func (r *Runner) applyLive(ctx context.Context, pt *part, recs []eventstore.Record, m *maintenance) error {
	if pt.cur == nil {
		return fmt.Errorf("%w: %q partition %d", ErrNotActive, pt.pr.name, pt.idx)
	}
	if m.verifyNow {
		// Take what the store has up to this batch before the batch moves
		// the checkpoint past it.
		var upTo eventstore.Position
		for _, rec := range recs {
			upTo = maxPosition(upTo, rec.Position)
		}
		for pt.cur.ckpt.verified.Before(upTo) {
			more, err := r.catchUpPage(ctx, pt, false)
			if err != nil {
				return err
			}
			if !more {
				break
			}
		}
		if !upTo.IsZero() {
			m.verifyNow = false
		}
	}
	if len(recs) == 0 {
		return nil
	}
	return r.applyBatch(ctx, pt, pt.targets(), recs, eventstore.Position{})
}

// ConsumerName returns the durable consumer name a runner with the given
// consumer prefix uses for a projection with one partition: characters
// other than letters, digits, "-" and "_" become "_", and a hash of the
// name is appended when any was replaced, so distinct names keep distinct
// consumers. Partition p of a projection with P > 1 partitions uses
// ConsumerName(...) + "_p<p>of<P>".
func ConsumerName(consumerPrefix, projection string) string {
	clean := []byte(projection)
	changed := false
	for i, c := range clean {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			clean[i], changed = '_', true
		}
	}
	name := consumerPrefix + "_" + string(clean)
	if changed {
		name += "_" + strconv.FormatUint(uint64(fnv32(projection)), 16)
	}
	return name
}

func partitionConsumerName(consumerPrefix, projection string, p, partitions int) string {
	name := ConsumerName(consumerPrefix, projection)
	if partitions > 1 {
		name += "_p" + strconv.Itoa(p) + "of" + strconv.Itoa(partitions)
	}
	return name
}
