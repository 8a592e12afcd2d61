package projection_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/natsevent"
	"github.com/eskit/eskit/projection"
)

const benchEvents = 50_000

// benchStore fills a store with benchEvents events over 100 streams.
func fillBench(b *testing.B, store eventstore.Store, reg *eventstore.Registry, bulk bool) []eventstore.Record {
	b.Helper()
	ctx := context.Background()
	const streams, perStream = 100, benchEvents / 100
	all := make([]eventstore.StreamAppend, 0, streams)
	for s := range streams {
		a := eventstore.StreamAppend{StreamID: "acct-" + strconv.Itoa(s), Expected: eventstore.NoStream}
		for i := range perStream {
			var v any = Deposited{Amount: int64(i%7 + 1)}
			if i%3 == 2 {
				v = Withdrawn{Amount: int64(i % 5)}
			}
			ev, err := reg.Encode(v, nil)
			require.NoError(b, err)
			a.Events = append(a.Events, ev)
		}
		all = append(all, a)
	}
	type importer interface {
		Import(context.Context, []eventstore.StreamAppend) (eventstore.AppendResult, error)
	}
	if im, ok := store.(importer); ok && bulk {
		_, err := im.Import(ctx, all)
		require.NoError(b, err)
	} else {
		for _, a := range all {
			_, err := store.AppendMulti(ctx, a)
			require.NoError(b, err)
		}
	}
	return allRecords(b, store)
}

// rawBaseline writes what the accounts projection writes for recs, with
// plain TxPipelined batches of the given size plus a checkpoint write, and
// returns events/s.
func rawBaseline(b *testing.B, rdb redis.UniversalClient, prefix string, recs []eventstore.Record, batch int) float64 {
	b.Helper()
	ctx := context.Background()
	ns := projection.Namespace{Prefix: prefix, Projection: "raw", Version: 1}
	reg := newRegistry(b)
	start := time.Now()
	for i := 0; i < len(recs); i += batch {
		chunk := recs[i:min(i+batch, len(recs))]
		_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for _, r := range chunk {
				v, err := reg.Decode(r)
				if err != nil {
					return err
				}
				p.HIncrBy(ctx, ns.Key("balance"), r.StreamID, v.(accountEvent).amount())
				p.RPush(ctx, ns.Key("history", r.StreamID), strconv.FormatInt(r.Version, 10)+":"+r.Type)
				p.Incr(ctx, ns.Key("count"))
			}
			p.HSet(ctx, prefix+"raw:ckpt", "pos", chunk[len(chunk)-1].Position.String())
			return nil
		})
		require.NoError(b, err)
	}
	rate := float64(len(recs)) / time.Since(start).Seconds()
	require.NoError(b, testsvc.DeletePrefix(ctx, rdb, prefix+"raw:"))
	return rate
}

// BenchmarkRebuild measures a full build of the accounts projection from
// the store's feed against the raw Redis baseline.
func BenchmarkRebuild(b *testing.B) {
	b.Run("memstore", func(b *testing.B) {
		benchRebuild(b, newMemstore(), false)
	})
	b.Run("pgstore", func(b *testing.B) {
		benchRebuild(b, newPGStore(b), true)
	})
}

func benchRebuild(b *testing.B, store eventstore.Store, bulk bool) {
	rdb, prefix := testsvc.Redis(b)
	reg := newRegistry(b)
	recs := fillBench(b, store, reg, bulk)
	head := recs[len(recs)-1].Position
	raw := rawBaseline(b, rdb, prefix, recs, projection.DefaultBatchSize)

	var total time.Duration
	b.ResetTimer()
	for i := range b.N {
		p := prefix + "r" + strconv.Itoa(i) + ":"
		r, err := projection.NewRunner(rdb, store, []projection.Projection{newAccounts(b, "accounts")}, fastOpts(b, p)...)
		require.NoError(b, err)
		total += runToHead(b, r, head, rdb, p)
	}
	reportRate(b, len(recs)*b.N, total, raw)
}

// startBench runs r and returns a function that stops it.
func startBench(r *projection.Runner) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	return func() { cancel(); <-done }
}

// liveOnly is a feed without history: the runner gets every record from
// JetStream.
type liveOnly struct{ projection.Source }

func (liveOnly) ReadAll(context.Context, eventstore.Position, int) ([]eventstore.Record, error) {
	return nil, nil
}

// BenchmarkLive measures applying events delivered by the durable consumer
// against the raw Redis baseline.
func BenchmarkLive(b *testing.B) {
	rdb, prefix := testsvc.Redis(b)
	ctx := context.Background()
	store := newMemstore()
	reg := newRegistry(b)
	recs := fillBench(b, store, reg, false)
	head := recs[len(recs)-1].Position
	br := newBroker(b)
	for _, r := range recs {
		if _, err := br.js.PublishMsgAsync(natsevent.NewMsg(br.prefix, r)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-br.js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("publish timed out")
	}
	raw := rawBaseline(b, rdb, prefix, recs, projection.DefaultBatchSize)

	var total time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		p := prefix + "l" + strconv.Itoa(i) + ":"
		cp := fmt.Sprintf("bench%d", i)
		_, err := br.js.CreateConsumer(ctx, br.stream, jetstream.ConsumerConfig{
			Durable: projection.ConsumerName(cp, "accounts"), DeliverPolicy: jetstream.DeliverAllPolicy,
			AckPolicy: jetstream.AckAllPolicy, MaxAckPending: 10000,
		})
		require.NoError(b, err)
		r, err := projection.NewRunner(rdb, liveOnly{store}, []projection.Projection{newAccounts(b, "accounts")},
			fastOpts(b, p, projection.WithJetStream(br.js, br.stream), projection.WithConsumerPrefix(cp))...)
		require.NoError(b, err)
		b.StartTimer()
		total += runToHead(b, r, head, rdb, p)
	}
	reportRate(b, len(recs)*b.N, total, raw)
}

// runToHead runs r until the projection's checkpoint reaches head and
// returns how long that took; then it stops r and deletes the prefix's keys
// (untimed).
func runToHead(b *testing.B, r *projection.Runner, head eventstore.Position, rdb redis.UniversalClient, prefix string) time.Duration {
	b.Helper()
	ctx := context.Background()
	start := time.Now()
	stop := startBench(r)
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	require.NoError(b, r.WaitFor(wctx, "accounts", head))
	cancel()
	took := time.Since(start)
	stop()
	b.StopTimer()
	require.NoError(b, testsvc.DeletePrefix(ctx, rdb, prefix))
	b.StartTimer()
	return took
}

// reportRate reports eskit's events/s, the raw baseline's and their ratio.
func reportRate(b *testing.B, events int, took time.Duration, raw float64) {
	rate := float64(events) / took.Seconds()
	b.ReportMetric(rate, "events/s")
	b.ReportMetric(raw, "raw_events/s")
	b.ReportMetric(rate/raw, "ratio")
}
