package projection_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/memstore"
	"github.com/eskit/eskit/internal/infra/natstest"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/natsevent"
	"github.com/eskit/eskit/outbox"
	"github.com/eskit/eskit/projection"
)

// Domain of the test projection.

type accountEvent interface{ amount() int64 }

type Deposited struct{ Amount int64 }
type Withdrawn struct{ Amount int64 }

func (e Deposited) amount() int64 { return e.Amount }
func (e Withdrawn) amount() int64 { return -e.Amount }

func newRegistry(t testing.TB) *eventstore.Registry {
	t.Helper()
	reg := eventstore.NewRegistry()
	require.NoError(t, eventstore.Register[Deposited](reg, "Deposited"))
	require.NoError(t, eventstore.Register[Withdrawn](reg, "Withdrawn"))
	return reg
}

// applied is one call of the test projection's apply.
type applied struct {
	version  int64 // namespace version
	replay   bool
	position eventstore.Position
	eventID  uuid.UUID
}

// accounts is the test projection: a balance and a history list per stream
// and a record count. It can be told to fail records, and it logs every
// apply and every side effect.
type accounts struct {
	name       string
	reg        *eventstore.Registry
	partitions int

	mu      sync.Mutex
	fail    map[uuid.UUID]error // records that fail while listed
	log     []applied
	effects map[uuid.UUID]int // side effects fired per event
	block   chan struct{}     // when not nil, Apply waits for it to close
}

func newAccounts(t testing.TB, name string) *accounts {
	return &accounts{name: name, reg: newRegistry(t), fail: map[uuid.UUID]error{}, effects: map[uuid.UUID]int{}}
}

func (a *accounts) Name() string { return a.name }

// Partitions makes the test projection partitioned when partitions > 1.
func (a *accounts) Partitions() int { return max(a.partitions, 1) }

func (a *accounts) Apply(ctx context.Context, b *projection.Batch, rec eventstore.Record) error {
	a.mu.Lock()
	block := a.block
	err := a.fail[rec.ID]
	a.log = append(a.log, applied{version: b.Namespace().Version, replay: b.Replay(), position: rec.Position, eventID: rec.ID})
	a.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err != nil {
		return err
	}
	return projection.Typed(a.reg, a.applyEvent)(ctx, b, rec)
}

func (a *accounts) applyEvent(ctx context.Context, b *projection.Batch, rec eventstore.Record, ev accountEvent) error {
	p := b.Pipe()
	p.HIncrBy(ctx, b.Key("balance"), rec.StreamID, ev.amount())
	p.RPush(ctx, b.Key("history", rec.StreamID), strconv.FormatInt(rec.Version, 10)+":"+rec.Type)
	p.Incr(ctx, b.Key("count"))
	b.AfterCommit(func(context.Context) {
		a.mu.Lock()
		a.effects[rec.ID]++
		a.mu.Unlock()
	})
	return nil
}

func (a *accounts) setFail(id uuid.UUID, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err == nil {
		delete(a.fail, id)
	} else {
		a.fail[id] = err
	}
}

func (a *accounts) applies() []applied {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.log)
}

func (a *accounts) sideEffects() map[uuid.UUID]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[uuid.UUID]int, len(a.effects))
	for k, v := range a.effects {
		out[k] = v
	}
	return out
}

// expected computes the read model the accounts projection builds from
// recs (skipping the given event IDs), in the form dump returns.
func expected(recs []eventstore.Record, skip ...uuid.UUID) map[string]string {
	out := map[string]string{}
	balance := map[string]int64{}
	history := map[string][]string{}
	n := 0
	for _, r := range recs {
		if slices.Contains(skip, r.ID) {
			continue
		}
		var amt int64
		var v struct{ Amount int64 }
		if err := json.Unmarshal(r.Data, &v); err != nil {
			panic(err)
		}
		switch r.Type {
		case "Deposited":
			amt = v.Amount
		case "Withdrawn":
			amt = -v.Amount
		default:
			continue
		}
		balance[r.StreamID] += amt
		history[r.StreamID] = append(history[r.StreamID], strconv.FormatInt(r.Version, 10)+":"+r.Type)
		n++
	}
	if n == 0 {
		return out
	}
	out["count"] = strconv.Itoa(n)
	var bal []string
	for s, b := range balance {
		bal = append(bal, s+"="+strconv.FormatInt(b, 10))
	}
	slices.Sort(bal)
	out["balance"] = "hash:" + strings.Join(bal, ",")
	for s, h := range history {
		out["history:"+s] = "list:" + strings.Join(h, ",")
	}
	return out
}

// dump reads every key of a namespace (names relative to it) in a
// comparable form.
func dump(t testing.TB, rdb redis.UniversalClient, ns projection.Namespace) map[string]string {
	t.Helper()
	ctx := context.Background()
	stem := ns.Key() + ":"
	keys := allKeys(t, rdb, projection.GlobEscape(stem)+"*")
	out := map[string]string{}
	for _, k := range keys {
		typ, err := rdb.Type(ctx, k).Result()
		require.NoError(t, err)
		var v string
		switch typ {
		case "string":
			v, err = rdb.Get(ctx, k).Result()
		case "hash":
			var m map[string]string
			m, err = rdb.HGetAll(ctx, k).Result()
			var parts []string
			for f, x := range m {
				parts = append(parts, f+"="+x)
			}
			slices.Sort(parts)
			v = "hash:" + strings.Join(parts, ",")
		case "list":
			var l []string
			l, err = rdb.LRange(ctx, k, 0, -1).Result()
			v = "list:" + strings.Join(l, ",")
		default:
			t.Fatalf("unexpected key type %s of %s", typ, k)
		}
		require.NoError(t, err)
		out[strings.TrimPrefix(k, stem)] = v
	}
	return out
}

// allKeys returns the keys matching pattern, on every master of a cluster.
func allKeys(t testing.TB, rdb redis.UniversalClient, pattern string) []string {
	t.Helper()
	ctx := context.Background()
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		keys, err := rdb.Keys(ctx, pattern).Result()
		require.NoError(t, err)
		return keys
	}
	var mu sync.Mutex
	var out []string
	require.NoError(t, cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		keys, err := node.Keys(ctx, pattern).Result()
		mu.Lock()
		out = append(out, keys...)
		mu.Unlock()
		return err
	}))
	return out
}

// countKeys counts the keys matching patterns.
func countKeys(t testing.TB, rdb redis.UniversalClient, patterns []string) int {
	t.Helper()
	n := 0
	for _, p := range patterns {
		keys, err := rdb.Keys(context.Background(), p).Result()
		require.NoError(t, err)
		n += len(keys)
	}
	return n
}

// appendEvents appends n events round-robin over streams, one per append,
// and returns the records' positions in order.
func appendEvents(t testing.TB, store eventstore.Appender, reg *eventstore.Registry, streams []string, n int) {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		var v any = Deposited{Amount: int64(i%7 + 1)}
		if i%3 == 2 {
			v = Withdrawn{Amount: int64(i % 5)}
		}
		ev, err := reg.Encode(v, nil)
		require.NoError(t, err)
		_, err = store.Append(ctx, streams[i%len(streams)], eventstore.Any, ev)
		require.NoError(t, err)
	}
}

// appendOne appends one event and returns its record.
func appendOne(t testing.TB, store eventstore.Store, reg *eventstore.Registry, stream string, v any) eventstore.Record {
	t.Helper()
	ctx := context.Background()
	ev, err := reg.Encode(v, nil)
	require.NoError(t, err)
	res, err := store.Append(ctx, stream, eventstore.Any, ev)
	require.NoError(t, err)
	recs, err := store.ReadAll(ctx, eventstore.Position{}, 1<<30)
	require.NoError(t, err)
	for _, r := range recs {
		if r.Position == res.Position {
			return r
		}
	}
	t.Fatalf("appended record not found")
	return eventstore.Record{}
}

// allRecords reads the whole feed.
func allRecords(t testing.TB, feed eventstore.FeedReader) []eventstore.Record {
	t.Helper()
	var out []eventstore.Record
	var pos eventstore.Position
	for {
		recs, err := feed.ReadAll(context.Background(), pos, 1000)
		require.NoError(t, err)
		if len(recs) == 0 {
			return out
		}
		out = append(out, recs...)
		pos = recs[len(recs)-1].Position
	}
}

func streamNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("acct-%d", i)
	}
	return out
}

// running is a runner started in the background.
type running struct {
	r      *projection.Runner
	cancel context.CancelFunc
	done   chan error
}

// start runs r until the test ends or stop is called.
func start(t testing.TB, r *projection.Runner) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	rn := &running{r: r, cancel: cancel, done: make(chan error, 1)}
	go func() { rn.done <- r.Run(ctx) }()
	t.Cleanup(rn.stop)
	return rn
}

// stop cancels the runner and waits for Run to return.
func (rn *running) stop() {
	rn.cancel()
	<-rn.done
	rn.done <- nil // later stops return at once
}

// waitHead waits until the projection has applied the feed's head.
func waitHead(t testing.TB, r *projection.Runner, name string, feed eventstore.FeedReader) eventstore.Position {
	t.Helper()
	head := testsvc.SettledHead(t, feed)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, r.WaitFor(ctx, name, head))
	return head
}

// eventually waits for cond, failing the test after timeout.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fastOpts are runner options for quick tests.
func fastOpts(t testing.TB, prefix string, extra ...projection.Option) []projection.Option {
	return append([]projection.Option{
		projection.WithLogger(slog.New(slog.NewTextHandler(t.Output(), nil))),
		projection.WithPrefix(prefix),
		projection.WithLease(time.Second, 100*time.Millisecond),
		projection.WithAttempts(3), projection.WithBackoffPolicy(backoff.Policy{Initial: time.Millisecond, Max: 5 * time.Millisecond}),
		projection.WithPollInterval(20 * time.Millisecond),
		projection.WithMaxWait(5 * time.Millisecond),
	}, extra...)
}

// runnerFreezeTTL is the lease TTL of the failover tests.
const runnerFreezeTTL = 2 * time.Second

// freezeRunnerOpts are the options of the failover tests' runners.
func freezeRunnerOpts(t testing.TB, prefix, owner string) []projection.Option {
	return fastOpts(t, prefix, projection.WithOwner(owner), projection.WithLease(runnerFreezeTTL, 200*time.Millisecond))
}

// requireTakeover waits for the standby to apply the accounts projection
// and requires that it did within the lease TTL (+1.5 s) of since, when
// the active runner was frozen or cut off (what).
func requireTakeover(t testing.TB, standby *projection.Runner, since time.Time, what string) {
	t.Helper()
	eventually(t, runnerFreezeTTL+5*time.Second, "the standby to take over", func() bool { return standby.Active("accounts") })
	after := time.Since(since)
	t.Logf("the standby took over %s after %s (ttl %s)", after, what, runnerFreezeTTL)
	require.Less(t, after, runnerFreezeTTL+1500*time.Millisecond, "takeover within the ttl (+1.5 s)")
}

func newMemstore() *memstore.Store { return memstore.New() }

// broker is an in-process JetStream with the relay's stream.
type broker struct {
	js     jetstream.JetStream
	prefix string
	stream string
}

// newBroker provisions a stream with a test-unique prefix on ESKIT_NATS_URL
// when it is set (deleting it when tb ends), or on an in-process server.
func newBroker(t testing.TB) *broker {
	t.Helper()
	url, external := natstest.ExternalURL()
	if !external {
		url = natstest.Start(t).URL()
	}
	b := &broker{js: natstest.JetStream(t, url)}
	b.prefix = strings.ReplaceAll(testsvc.Name("ev"), "_", "")
	b.stream = strings.ToUpper(b.prefix)
	_, err := outbox.EnsureStream(context.Background(), b.js, outbox.StreamConfig{Prefix: b.prefix, Name: b.stream})
	require.NoError(t, err)
	if external {
		t.Cleanup(func() { _ = b.js.DeleteStream(context.Background(), b.stream) })
	}
	return b
}

// publish publishes records as the relay does.
func (b *broker) publish(t testing.TB, recs []eventstore.Record) {
	t.Helper()
	ctx := context.Background()
	for _, r := range recs {
		_, err := b.js.PublishMsg(ctx, natsevent.NewMsg(b.prefix, r))
		require.NoError(t, err)
	}
}

// relay publishes every record of feed after the last one published, as the
// outbox relay does, until the test ends.
func (b *broker) relay(t testing.TB, store eventstore.Store) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for r, err := range store.Subscribe(ctx, eventstore.Position{}) {
			if err != nil {
				return
			}
			if _, err := b.js.PublishMsg(ctx, natsevent.NewMsg(b.prefix, r)); err != nil {
				if ctx.Err() == nil {
					t.Errorf("publish: %v", err)
				}
				return
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// appendWhileRunning appends to 30 streams from 3 writers, burst events at
// a time with a pause between bursts, until the returned stop function is
// called (which waits for the writers).
func appendWhileRunning(t testing.TB, store eventstore.Appender, reg *eventstore.Registry, burst int, pause time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() {
			streams := streamNames(30)[w*10 : w*10+10]
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				appendEvents(t, store, reg, streams[i%len(streams):i%len(streams)+1], burst)
				time.Sleep(pause)
			}
		})
	}
	return func() { close(done); wg.Wait() }
}

// effectsAfter waits until every record of recs had its side effect (they
// run after the commit that WaitFor sees), then returns the counts.
func effectsAfter(t testing.TB, acc *accounts, recs []eventstore.Record) map[uuid.UUID]int {
	t.Helper()
	eventually(t, 10*time.Second, "the side effects run", func() bool {
		e := acc.sideEffects()
		for _, r := range recs {
			if e[r.ID] == 0 {
				return false
			}
		}
		return true
	})
	return acc.sideEffects()
}
