package outbox_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/memstore"
	"github.com/eskit/eskit/internal/infra/natstest"
	"github.com/eskit/eskit/natsevent"
	"github.com/eskit/eskit/outbox"
)

// BenchmarkRelay measures the relay's throughput (feed -> JetStream, with
// checkpoints in PostgreSQL) next to raw PublishAsync of the same messages,
// with the same in-flight window, in the same run (raw publishes before and
// after the relay; the mean is reported). Use a fixed count, e.g.
// -benchtime=100000x.
func BenchmarkRelay(b *testing.B) {
	ctx := context.Background()
	srv := natstest.Start(b)
	const window = outbox.DefaultMaxInFlight
	js := natstest.JetStream(b, srv.URL(), jetstream.WithPublishAsyncMaxPending(window))
	for _, p := range []string{"raw", "raw2", "relay"} {
		if _, err := outbox.EnsureStream(ctx, js, outbox.StreamConfig{Prefix: p}); err != nil {
			b.Fatal(err)
		}
	}
	pool := newDB(b)
	store := memstore.New()
	n := b.N
	for i := 0; i < n; i += 100 {
		evs := make([]eventstore.Event, 0, 100)
		for j := i; j < min(i+100, n); j++ {
			evs = append(evs, eventstore.Event{
				ID: eventstore.NewEventID(), Type: "Deposited",
				Data:     []byte(fmt.Sprintf(`{"amount":%d,"currency":"EUR","note":"benchmark payload"}`, j)),
				Metadata: eventstore.Metadata{eventstore.MetaCorrelationID: "c", eventstore.MetaContentType: "application/json"},
			})
		}
		if _, err := store.Append(ctx, fmt.Sprintf("account-%d", i%1000), eventstore.Any, evs...); err != nil {
			b.Fatal(err)
		}
	}
	recs := feedAll(b, store)
	head := recs[len(recs)-1].Position

	// Raw: the same messages, PublishAsync, then wait for every ack. It
	// runs before and after the relay, on streams of its own, and the mean
	// is reported, so that load changes during the run affect both sides.
	rawRun := func(prefix string) time.Duration {
		msgs := make([]*nats.Msg, len(recs))
		for i, r := range recs {
			msgs[i] = natsevent.NewMsg(prefix, r)
		}
		start := time.Now()
		for _, m := range msgs {
			if _, err := js.PublishMsgAsync(m); err != nil {
				b.Fatal(err)
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(5 * time.Minute):
			b.Fatal("raw publish did not complete")
		}
		return time.Since(start)
	}
	raw := rawRun("raw")

	// Relay: from start until its checkpoint reaches the head.
	r, err := outbox.NewRelay(store, pool, js, outbox.WithPrefix("relay"), outbox.WithSchema(testSchema))
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	stop := runRelay(b, r)
	for r.Stats().Position.Before(head) {
		time.Sleep(time.Millisecond)
	}
	relay := time.Since(start)
	b.StopTimer()
	stop()
	raw = (raw + rawRun("raw2")) / 2

	rawRate := float64(n) / raw.Seconds()
	relayRate := float64(n) / relay.Seconds()
	b.ReportMetric(rawRate, "raw-msg/s")
	b.ReportMetric(relayRate, "relay-msg/s")
	b.ReportMetric(relayRate/rawRate, "ratio")
}
