package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/natsevent"
	"github.com/eskit/eskit/outbox"
)

// runRelay measures the outbox relay (PostgreSQL feed to JetStream, with
// its checkpoint in PostgreSQL) next to a minimal hand-written relay doing
// the same I/O: it pages through the events table in feed order with a
// keyset SELECT of the batch's rows (rawPages, 1,000 rows a page, as the
// relay reads) and publishes each row's message (natsevent.NewMsg, the
// relay's wire format) with PublishMsgAsync, the same in-flight window,
// until every acknowledgement arrived. In each round a batch of events is
// imported; the relay's time is from the import's return until JetStream
// has stored (acknowledged) every record of the batch, the baseline's from
// its first read until its last acknowledgement. The relay's checkpoint,
// written every 100 ms or batch size, is bookkeeping for restarts and is
// not waited for.
func runRelay(ctx context.Context, e *env) ([]Result, error) {
	f, err := newAppendFixture(ctx, e, "bench_relay")
	if err != nil {
		return nil, err
	}
	defer f.close()
	relayPrefix, relayStream, err := e.ensureStream(ctx, "relay")
	if err != nil {
		return nil, err
	}
	rawPrefix, _, err := e.ensureStream(ctx, "raw")
	if err != nil {
		return nil, err
	}
	const window = outbox.DefaultMaxInFlight
	rawJS, err := jetstream.New(e.nc, jetstream.WithPublishAsyncMaxPending(window))
	if err != nil {
		return nil, err
	}
	relay, err := outbox.NewRelay(f.store, e.pool, e.js, outbox.WithSchema(f.schema), outbox.WithPrefix(relayPrefix),
		outbox.WithName("bench"), outbox.WithMaxInFlight(window), outbox.WithLogger(e.quiet))
	if err != nil {
		return nil, err
	}
	rctx, stop := context.WithCancel(ctx)
	var runErr error
	stopped := make(chan struct{})
	go func() { defer close(stopped); runErr = relay.Run(rctx) }()
	defer func() { stop(); <-stopped }()
	relayErr := func() error { return runErr } // read only once stopped is closed

	total := e.sizes.Relay
	rounds := max(1, e.sizes.Rounds)
	per := max(1, total/rounds)
	total = per * rounds
	stream, err := e.js.Stream(ctx, relayStream)
	if err != nil {
		return nil, err
	}
	var after eventstore.Position
	var te, tb time.Duration
	published := uint64(0)
	for r := range rounds + 1 { // round 0 warms up
		n := per
		if r == 0 {
			n = min(per, 1000)
		}
		appends, err := streamBatch(f.reg, "relay-"+strconv.Itoa(r), n, 100)
		if err != nil {
			return nil, err
		}
		// The relay starts as soon as the import commits: its time runs
		// from the import's return until its checkpoint covers the batch.
		_, err = f.store.Import(ctx, appends)
		if err != nil {
			return nil, err
		}
		published += uint64(n)
		want := published
		eskit := func() error { return waitStored(ctx, stream, want, stopped, relayErr) }
		from := after
		base := func() error {
			var err error
			after, err = rawRelay(ctx, e.pool, rawJS, rawPrefix, feedQuery(f.schema), from, n)
			return err
		}
		d, err := timedSide(e.mem, sideEskit, eskit)
		if err != nil {
			return nil, err
		}
		db, err := timedSide(e.mem, sideBase, base)
		if err != nil {
			return nil, err
		}
		if r > 0 {
			te, tb = te+d, tb+db
		}
	}
	params := map[string]any{"events": total, "rounds": rounds, "max_in_flight": window}
	r := result("relay", "events/s", rate(total, te), rate(total, tb), params)
	return []Result{r.withTarget(target{ratio: true, min: true, bound: 0.9})}, nil
}

// waitStored waits until the JetStream stream holds want messages;
// stopped is closed when the relay's Run returned, with the error runErr
// returns.
func waitStored(ctx context.Context, stream jetstream.Stream, want uint64, stopped <-chan struct{}, runErr func() error) error {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		info, err := stream.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Msgs >= want {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-stopped:
			return fmt.Errorf("relay stopped: %w", runErr())
		case <-time.After(500 * time.Microsecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("relay stuck: JetStream holds %d of %d messages", info.State.Msgs, want)
		}
	}
}

// rawRelay is the relay baseline: it reads the n records after a position
// from the events table page by page (rawPages) and publishes each page's
// messages with PublishMsgAsync as it reads, then waits for every
// acknowledgement. It returns the position of the last record.
func rawRelay(ctx context.Context, pool *pgxpool.Pool, js jetstream.JetStream, prefix, query string,
	after eventstore.Position, n int) (eventstore.Position, error) {
	futures := make([]jetstream.PubAckFuture, 0, n)
	_, last, err := rawPages(ctx, pool, query, after, n, outbox.DefaultBatchSize, func(recs []eventstore.Record) error {
		for _, r := range recs {
			f, err := js.PublishMsgAsync(natsevent.NewMsg(prefix, r))
			if err != nil {
				return err
			}
			futures = append(futures, f)
		}
		return nil
	})
	if err != nil {
		return after, err
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return after, ctx.Err()
	case <-time.After(5 * time.Minute):
		return after, errors.New("raw relay: acknowledgements did not arrive")
	}
	for _, f := range futures {
		select {
		case err := <-f.Err():
			return after, fmt.Errorf("raw relay: %w", err)
		default:
		}
	}
	return last, nil
}

// readFrom reads the n records of the feed after a position.
func readFrom(ctx context.Context, feed eventstore.FeedReader, after eventstore.Position, n int) ([]eventstore.Record, error) {
	var out []eventstore.Record
	deadline := time.Now().Add(time.Minute)
	for len(out) < n {
		recs, err := feed.ReadAll(ctx, after, min(1000, n-len(out)))
		if err != nil {
			return nil, err
		}
		if len(recs) == 0 {
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("feed shows %d of %d records", len(out), n)
			}
			time.Sleep(time.Millisecond)
			continue
		}
		out = append(out, recs...)
		after = recs[len(recs)-1].Position
	}
	return out, nil
}

// rawPublish publishes the records' messages with PublishAsync and waits
// for every acknowledgement.
func rawPublish(ctx context.Context, js jetstream.JetStream, prefix string, recs []eventstore.Record) error {
	msgs := make([]*nats.Msg, len(recs))
	for i, r := range recs {
		msgs[i] = natsevent.NewMsg(prefix, r)
	}
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, m := range msgs {
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			return err
		}
		futures = append(futures, f)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(5 * time.Minute):
		return errors.New("raw publish: acknowledgements did not arrive")
	}
	for _, f := range futures {
		select {
		case err := <-f.Err():
			return fmt.Errorf("raw publish: %w", err)
		default:
		}
	}
	return nil
}
