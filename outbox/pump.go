package outbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/lease"
	"github.com/eskit/eskit/natsevent"
)

// inflight is a published, not yet acknowledged record.
type inflight struct {
	pos      eventstore.Position
	recorded time.Time
	future   jetstream.PubAckFuture
	sent     time.Time
	span     trace.Span // publish span, nil when the record is not traced
}

// pump is one stretch of relaying the feed from the checkpoint while the
// relay leads, until a publish or feed failure, the end of the leadership
// or the end of ctx.
//
// A reader goroutine (Relay.follow) follows the feed, so reads, publishes,
// acknowledgements and checkpoint writes overlap: up to max in-flight
// records are unacknowledged at any time (the window), and the pump blocks
// only when it has nothing to publish and nothing to collect. The
// checkpoint moves only past an unbroken prefix of acknowledged records:
// after every batch-size acknowledgements, once the checkpoint interval has
// passed since the last write, and before the pump ends. While nothing is
// left to checkpoint, the pump verifies the leadership every check
// interval; it refreshes the relay's lag figures at that interval too.
type pump struct {
	r        *Relay
	ctx      context.Context
	held     *lease.Held
	lead     Leadership
	retries  *backoff.Backoff // reset by every checkpoint write
	nc       *nats.Conn
	in       <-chan feedItem // the reader's records
	stopFeed context.CancelFunc
	timer    *time.Timer

	// saved is the checkpoint as last written.
	saved eventstore.Position
	// window holds the published records, oldest first: window[head:] are
	// outstanding, the ones before it acknowledged and cleared.
	window []inflight
	head   int
	// acked is the last record of the acknowledged prefix, ackedAt its
	// RecordedAt; unsaved counts the acknowledged records after saved.
	acked   eventstore.Position
	ackedAt time.Time
	unsaved int
	// lastSave is the last checkpoint write or leadership check; lastLag
	// the last lag refresh.
	lastSave time.Time
	lastLag  time.Time
	// saving is the result channel of the checkpoint write in flight (nil
	// when none): the pump goes on publishing and collecting while it
	// runs. savingPos and savingN are what it writes: the acknowledged
	// prefix up to savingPos, savingN records past the checkpoint before
	// it. saveGot and saveErr hold its result once await received it. No
	// other write or check of the leadership runs while one is in flight.
	saving    chan error
	savingPos eventstore.Position
	savingN   int
	saveGot   bool
	saveErr   error
	// prev is the event ID of the record published before, in feed order.
	// Each message expects it as the stream's last message ID, so when the
	// server refuses a message (a limit, a stream leader change), every
	// message after it is refused too, and the retry from the checkpoint
	// stores them in order: JetStream never holds a record before one that
	// precedes it in the feed. The first message of a pump carries no
	// expectation: everything before it is acknowledged.
	prev string
}

// newPump starts the reader of the feed after the checkpoint pos.
func newPump(ctx context.Context, r *Relay, held *lease.Held, lead Leadership, pos eventstore.Position, retries *backoff.Backoff) *pump {
	fctx, stopFeed := context.WithCancel(ctx)
	now := time.Now()
	return &pump{
		r: r, ctx: ctx, held: held, lead: lead, retries: retries, nc: r.js.Conn(),
		in: r.follow(fctx, pos), stopFeed: stopFeed, timer: time.NewTimer(time.Hour),
		saved: pos, acked: pos, window: make([]inflight, 0, r.cfg.maxInFlight),
		lastSave: now, lastLag: now,
	}
}

// run relays until a publish or feed failure, returned as retry after the
// acknowledged prefix is checkpointed (p.saved is then where to resume), or
// until the leadership fails or ctx ends, returned as err.
func (p *pump) run() (retry, err error) {
	defer func() {
		if retry != nil {
			p.close(retry)
		} else {
			p.close(err)
		}
	}()
	for {
		busy, cause := p.exchange()
		if cause == nil && !p.nc.IsConnected() {
			// Even with nothing to publish: a leader cut off from NATS
			// retries, and steps down after the lease TTL (Relay.lead).
			cause = ErrDisconnected
		}
		if cause != nil {
			return p.fail(cause)
		}
		if err := p.upkeep(); err != nil {
			return nil, err
		}
		if busy {
			continue
		}
		if cause := p.await(); cause != nil {
			return p.fail(cause)
		}
	}
}

// close stops the reader, waits for it to return and ends the spans of the
// records still outstanding with cause.
func (p *pump) close(cause error) {
	p.timer.Stop()
	if p.saving != nil && !p.saveGot {
		<-p.saving // never leave a write of the leadership behind
		p.saving = nil
	}
	p.stopFeed()
	for range p.in { // wait for the reader to return
	}
	if cause == nil {
		cause = errPublishAbandoned
	}
	for _, f := range p.window[p.head:] {
		endPublish(f.span, cause)
	}
}

// room reports whether the window takes another record.
func (p *pump) room() bool { return len(p.window)-p.head < p.r.cfg.maxInFlight }

// outstanding reports whether a published record awaits its
// acknowledgement.
func (p *pump) outstanding() bool { return p.head < len(p.window) }

// exchange publishes what the reader has ready while the window has room,
// and collects the acknowledgements that have arrived, without blocking.
// busy reports that it did either; cause is a publish or feed failure.
func (p *pump) exchange() (busy bool, cause error) {
	for p.room() {
		select {
		case it, ok := <-p.in:
			if err := p.take(it, ok); err != nil {
				return busy, err
			}
			busy = true
			continue
		default:
		}
		break
	}
	for p.outstanding() {
		f := p.window[p.head].future
		select {
		case <-f.Ok():
			p.pop()
			busy = true
			continue
		case err := <-f.Err():
			return busy, fmt.Errorf("outbox: publish: %w", err)
		default:
		}
		break
	}
	return busy, nil
}

// upkeep writes the checkpoint when due, and every check interval verifies
// the leadership (when there was no checkpoint write to prove it) and
// refreshes the lag figures. Its errors end the pump: the leadership
// failed.
func (p *pump) upkeep() error {
	cfg := &p.r.cfg
	if p.saving != nil && !p.saveGot {
		select {
		case p.saveErr = <-p.saving:
			p.saveGot = true
		default:
		}
	}
	if p.saveGot {
		if err := p.finishSave(); err != nil {
			return err
		}
	}
	now := time.Now()
	if p.saving == nil && (p.unsaved >= cfg.batchSize || (p.unsaved > 0 && now.Sub(p.lastSave) >= cfg.saveInterval)) {
		p.startSave()
	}
	if now.Sub(p.lastLag) < cfg.checkInterval {
		return nil
	}
	if p.unsaved == 0 && p.saving == nil && now.Sub(p.lastSave) >= cfg.checkInterval {
		if err := p.lead.Check(p.ctx); err != nil {
			if p.ctx.Err() != nil {
				return p.ctx.Err()
			}
			return err
		}
		p.lastSave = time.Now()
	}
	p.r.refreshLag(p.ctx, p.saved)
	p.lastLag = time.Now()
	return nil
}

// await blocks until a record, an acknowledgement, a deadline (of the
// oldest acknowledgement, the checkpoint or the upkeep) or the end of ctx.
// It returns a publish or feed failure, an acknowledgement timeout, or
// ctx's error.
func (p *pump) await() error {
	cfg := &p.r.cfg
	var (
		recv   <-chan feedItem
		okCh   <-chan *jetstream.PubAck
		errCh  <-chan error
		saveCh <-chan error
	)
	if !p.saveGot {
		saveCh = p.saving // nil when no write is in flight
	}
	deadline := p.lastLag.Add(cfg.checkInterval)
	if p.unsaved > 0 && p.saving == nil {
		// (A write in flight wakes the pump through saveCh.)
		deadline = earliest(deadline, p.lastSave.Add(cfg.saveInterval))
	}
	if p.room() {
		recv = p.in
	}
	if p.outstanding() {
		f := p.window[p.head]
		if time.Since(f.sent) >= cfg.ackTimeout {
			return ErrAckTimeout
		}
		okCh, errCh = f.future.Ok(), f.future.Err()
		deadline = earliest(deadline, f.sent.Add(cfg.ackTimeout))
	}
	p.timer.Reset(max(time.Until(deadline), 0))
	defer p.timer.Stop()
	select {
	case it, ok := <-recv:
		return p.take(it, ok)
	case <-okCh:
		p.pop()
	case err := <-errCh:
		return fmt.Errorf("outbox: publish: %w", err)
	case err := <-saveCh:
		p.saveErr, p.saveGot = err, true // upkeep takes it
	case <-p.timer.C:
	case <-p.ctx.Done():
		return p.ctx.Err()
	}
	return nil
}

// take publishes a record (or reports the error) the reader handed over;
// ok is false when the reader has stopped.
func (p *pump) take(it feedItem, ok bool) error {
	switch {
	case !ok:
		return errFeedEnded
	case it.err != nil:
		return fmt.Errorf("outbox: read feed: %w", it.err)
	}
	return p.publish(&it.rec)
}

// publish sends rec and puts it in the window.
func (p *pump) publish(rec *eventstore.Record) error {
	r := p.r
	// The lease first: a leader that has just woken from a freeze past its
	// deadline must not publish another record.
	if err := p.held.Err(); err != nil {
		return notLeader("publish", p.held.Lease(), err)
	}
	if !p.nc.IsConnected() {
		return ErrDisconnected
	}
	msg := natsevent.NewMsg(r.cfg.prefix, *rec)
	if r.ttlHeader != nil {
		msg.Header[natsevent.HeaderTTL] = r.ttlHeader // never modified, so shared
	}
	if p.prev != "" {
		msg.Header[jetstream.ExpectedLastMsgIDHeader] = []string{p.prev}
	}
	// The event ID as NewMsg formatted it: the next message's expectation.
	p.prev = msg.Header[natsevent.HeaderMsgID][0]
	span := r.tel.startPublish(p.ctx, rec, msg)
	f, err := r.js.PublishMsgAsync(msg, r.pubOp...)
	if err != nil {
		err = fmt.Errorf("outbox: publish: %w", err)
		endPublish(span, err)
		return err
	}
	p.window = append(p.window, inflight{pos: rec.Position, recorded: rec.RecordedAt, future: f, sent: time.Now(), span: span})
	return nil
}

// pop takes the oldest outstanding record as acknowledged.
func (p *pump) pop() {
	f := p.window[p.head]
	endPublish(f.span, nil)
	p.window[p.head] = inflight{}
	p.head++
	p.acked, p.ackedAt = f.pos, f.recorded
	p.unsaved++
	if p.head == len(p.window) {
		p.window, p.head = p.window[:0], 0
	}
}

// startSave starts writing the checkpoint past the acknowledged prefix in
// the background; the caller checked that none is in flight and that
// records were acknowledged since the last write. Writes run one at a time
// and in order, so the checkpoint only moves forward, and only past
// acknowledged records.
func (p *pump) startSave() {
	ch := make(chan error, 1)
	p.saving, p.savingPos, p.savingN = ch, p.acked, p.unsaved
	p.saveGot, p.saveErr = false, nil
	p.unsaved = 0
	lead, pos, timeout := p.lead, p.acked, p.r.cfg.ackTimeout
	// Checkpoint what is acknowledged even when ctx has just ended, so
	// that a stopped relay's successor re-publishes as little as possible.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(p.ctx), timeout)
	go func() {
		defer cancel()
		ch <- lead.Save(sctx, pos)
	}()
}

// waitSave waits for the checkpoint write in flight, if any, and takes its
// result.
func (p *pump) waitSave() error {
	if p.saving == nil {
		return nil
	}
	if !p.saveGot {
		p.saveErr, p.saveGot = <-p.saving, true
	}
	return p.finishSave()
}

// finishSave takes the result of the checkpoint write that has returned
// and updates the relay's figures.
func (p *pump) finishSave() error {
	err, n := p.saveErr, p.savingN
	p.saving, p.saveGot, p.saveErr, p.savingN = nil, false, nil, 0
	if err != nil {
		return err
	}
	r := p.r
	p.saved = p.savingPos
	p.lastSave = time.Now()
	p.retries.Reset()
	var oldest time.Time
	idle := false
	switch {
	case p.outstanding():
		oldest = p.window[p.head].recorded
	case len(p.in) > 0:
		oldest = p.ackedAt
	default:
		// Nothing read is unpublished: the lag is what the reader has
		// not seen yet, which the next refresh measures.
		idle = true
	}
	r.tel.published.Add(p.ctx, int64(n), r.tel.set)
	r.mu.Lock()
	r.stats.Published += uint64(n)
	r.stats.Position = p.saved
	r.stats.LeaderProgressAt = p.lastSave
	if r.stats.LagEvents > uint64(n) && !idle {
		r.stats.LagEvents -= uint64(n)
	} else {
		r.stats.LagEvents = 0
	}
	r.since = oldest
	r.mu.Unlock()
	return nil
}

// save writes the checkpoint past the acknowledged prefix, when it moved,
// and waits for it (and for a write in flight before it).
func (p *pump) save() error {
	if err := p.waitSave(); err != nil {
		return err
	}
	if p.unsaved == 0 {
		return nil
	}
	p.startSave()
	return p.waitSave()
}

// fail checkpoints the acknowledged prefix and reports cause for a retry
// from there; a failed write, or the end of ctx, ends the pump instead.
func (p *pump) fail(cause error) (retry, err error) {
	if errors.Is(cause, ErrNotLeader) {
		return nil, cause
	}
	if err := p.save(); err != nil {
		return nil, err
	}
	if p.ctx.Err() != nil {
		return nil, p.ctx.Err()
	}
	return cause, nil
}

// earliest returns the earlier of two times.
func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
