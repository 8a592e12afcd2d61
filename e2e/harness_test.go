package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/internal/infra/natstest"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/outbox"
	"github.com/eskit/eskit/projection"
)

const (
	schema   = "eskit"
	ledgerPN = "ledger"
	// waitLimit bounds every wait of the tests; reaching it is a failure.
	waitLimit = 30 * time.Second
)

// env is one deployment on the real services: a PostgreSQL store in a
// fresh database, a JetStream stream with a test-unique subject prefix and
// a Redis key prefix.
type env struct {
	tb     testing.TB
	pool   *pgxpool.Pool
	store  *pgstore.Store
	rdb    *redis.Client
	prefix string // Redis key prefix
	nats   *natstest.Server
	url    string
	js     jetstream.JetStream
	subj   string // subject prefix
	stream string
	log    *slog.Logger
}

// newEnv sets up an environment. With inProcess the JetStream server runs
// in the test process (so it can be stopped and restarted); otherwise
// ESKIT_NATS_URL is used when set. opts configure the store.
func newEnv(tb testing.TB, inProcess bool, opts ...pgstore.Option) *env {
	tb.Helper()
	ctx := context.Background()
	e := &env{tb: tb}
	e.log = slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	e.pool = testsvc.Pool(tb)
	store, err := pgstore.New(ctx, e.pool, append([]pgstore.Option{pgstore.WithSchema(schema), pgstore.WithAutoMigrate()}, opts...)...)
	require.NoError(tb, err)
	tb.Cleanup(store.Close)
	e.store = store
	e.rdb, e.prefix = testsvc.Redis(tb)

	url, external := natstest.ExternalURL()
	if inProcess || !external {
		e.nats = natstest.Start(tb)
		url, external = e.nats.URL(), false
	}
	e.url = url
	e.js = natstest.JetStream(tb, url)
	e.subj = strings.ReplaceAll(testsvc.Name("e2e"), "_", "")
	e.stream = strings.ToUpper(e.subj)
	_, err = outbox.EnsureStream(ctx, e.js, outbox.StreamConfig{Prefix: e.subj, Name: e.stream})
	require.NoError(tb, err)
	if external {
		tb.Cleanup(func() { _ = e.js.DeleteStream(context.Background(), e.stream) })
	}
	return e
}

// proc is a background component (relay or runner) that can be stopped.
type proc struct {
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

func (e *env) spawn(run func(ctx context.Context)) *proc {
	ctx, cancel := context.WithCancel(context.Background())
	p := &proc{cancel: cancel, done: make(chan struct{})}
	go func() { defer close(p.done); run(ctx) }()
	e.tb.Cleanup(p.stop)
	return p
}

// stop cancels the component and waits until it has returned.
func (p *proc) stop() {
	p.once.Do(func() {
		p.cancel()
		<-p.done
	})
}

// relayProc is a running outbox relay with its own NATS connection.
type relayProc struct {
	*proc
	relay *outbox.Relay
}

func (e *env) startRelay(opts ...outbox.Option) *relayProc {
	e.tb.Helper()
	js := natstest.JetStream(e.tb, e.url)
	r, err := outbox.NewRelay(e.store, e.pool, js, append([]outbox.Option{
		outbox.WithSchema(schema),
		outbox.WithPrefix(e.subj),
		outbox.WithBatchSize(100),
		outbox.WithStandbyInterval(20 * time.Millisecond),
		outbox.WithBackoffPolicy(backoff.Policy{Initial: 5 * time.Millisecond, Max: 200 * time.Millisecond}),
		outbox.WithCheckInterval(200 * time.Millisecond),
		outbox.WithAckTimeout(2 * time.Second),
		outbox.WithLogger(e.log),
	}, opts...)...)
	require.NoError(e.tb, err)
	rp := &relayProc{relay: r}
	rp.proc = e.spawn(func(ctx context.Context) {
		if err := r.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			e.tb.Errorf("relay: %v", err)
		}
	})
	return rp
}

// runnerProc is a running projection runner with its own Redis client and
// NATS connection, as a separate process would have.
type runnerProc struct {
	*proc
	runner *projection.Runner
	ledger *ledger
	rdb    *redis.Client
	redis  *freezer
	js     jetstream.JetStream // the runner's own connection
}

// stop stops the runner and waits until the server has processed
// everything it sent (its acknowledgements included).
func (rp *runnerProc) stop(tb testing.TB) {
	tb.Helper()
	rp.proc.stop()
	require.NoError(tb, rp.js.Conn().Flush())
}

func (e *env) runnerOptions(js jetstream.JetStream, extra ...projection.Option) []projection.Option {
	return append([]projection.Option{
		projection.WithPrefix(e.prefix),
		projection.WithJetStream(js, e.stream),
		projection.WithBatchSize(100),
		projection.WithLease(time.Second, 150*time.Millisecond),
		projection.WithAttempts(3), projection.WithBackoffPolicy(backoff.Policy{Initial: 2 * time.Millisecond, Max: 100 * time.Millisecond}),
		projection.WithPollInterval(20 * time.Millisecond),
		projection.WithLogger(e.log),
	}, extra...)
}

func (e *env) startRunner(l *ledger, opts ...projection.Option) *runnerProc {
	e.tb.Helper()
	rdb := redis.NewClient(e.rdb.Options())
	e.tb.Cleanup(func() { _ = rdb.Close() })
	fr := &freezer{}
	rdb.AddHook(fr)
	e.tb.Cleanup(fr.thaw)
	js := natstest.JetStream(e.tb, e.url)
	r, err := projection.NewRunner(rdb, e.store, []projection.Projection{l}, e.runnerOptions(js, opts...)...)
	require.NoError(e.tb, err)
	rp := &runnerProc{runner: r, ledger: l, rdb: rdb, redis: fr, js: js}
	rp.proc = e.spawn(func(ctx context.Context) {
		if err := r.Run(ctx); err != nil {
			e.tb.Errorf("runner: %v", err)
		}
	})
	return rp
}

// freezer is a go-redis hook that stalls a client's commands while the
// client is frozen, as if its process were paused: nothing reaches Redis,
// and everything goes on where it stopped once thawed.
type freezer struct {
	mu     sync.Mutex
	thawed chan struct{} // nil while not frozen
}

func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.thawed == nil {
		f.thawed = make(chan struct{})
	}
}

func (f *freezer) thaw() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.thawed != nil {
		close(f.thawed)
		f.thawed = nil
	}
}

func (f *freezer) wait(ctx context.Context) error {
	f.mu.Lock()
	ch := f.thawed
	f.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *freezer) DialHook(next redis.DialHook) redis.DialHook { return next }

func (f *freezer) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if err := f.wait(ctx); err != nil {
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}

func (f *freezer) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if err := f.wait(ctx); err != nil {
			for _, c := range cmds {
				c.SetErr(err)
			}
			return err
		}
		return next(ctx, cmds)
	}
}

// ---- the read model ----

// payload is the data of the ledger's events.
type payload struct {
	Amount int64 `json:"amount"`
}

// ledgerLua applies one record atomically inside the batch's MULTI/EXEC,
// after the writes of the batch's earlier records: it checks that the
// stream's versions arrive consecutively (recording any break in the
// violations list), then updates the stream's last version, balance and
// event count, and the global count.
const ledgerLua = `
local prev = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local v = tonumber(ARGV[2])
if v ~= prev + 1 then
  redis.call('RPUSH', KEYS[5], ARGV[1] .. ': v' .. prev .. ' then v' .. v)
end
redis.call('HSET', KEYS[1], ARGV[1], v)
redis.call('HINCRBY', KEYS[2], ARGV[1], ARGV[3])
redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
redis.call('INCR', KEYS[4])
return v`

// ledger is the read model under test: per stream the last version, the
// balance and the number of events; the global number of events; and the
// list of per-stream order violations (which must stay empty).
type ledger struct {
	mu     sync.Mutex
	poison map[uuid.UUID]bool
	gate   atomic.Pointer[gate]
	// applied, when set, receives the event ID of every record applied;
	// committed receives the event IDs of live records once their batch
	// has committed.
	applied, committed func(id uuid.UUID)
}

func newLedger() *ledger { return &ledger{poison: make(map[uuid.UUID]bool)} }

func (l *ledger) Name() string { return ledgerPN }

func (l *ledger) setPoison(id uuid.UUID, on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if on {
		l.poison[id] = true
	} else {
		delete(l.poison, id)
	}
}

func (l *ledger) poisoned(id uuid.UUID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.poison[id]
}

func (l *ledger) Apply(ctx context.Context, b *projection.Batch, rec eventstore.Record) error {
	if l.poisoned(rec.ID) {
		return fmt.Errorf("cannot apply %s v%d: account frozen", rec.StreamID, rec.Version)
	}
	if g := l.gate.Swap(nil); g != nil {
		g.hold()
	}
	var p payload
	if err := json.Unmarshal(rec.Data, &p); err != nil {
		return projection.Permanent(err)
	}
	amount := p.Amount
	if rec.Type == "Withdrawn" {
		amount = -amount
	}
	b.Pipe().Eval(ctx, ledgerLua,
		[]string{b.Key("version"), b.Key("balance"), b.Key("count"), b.Key("total"), b.Key("violations")},
		rec.StreamID, rec.Version, amount)
	if fn := l.applied; fn != nil {
		fn(rec.ID)
	}
	if fn := l.committed; fn != nil {
		id := rec.ID
		b.AfterCommit(func(context.Context) { fn(id) })
	}
	return nil
}

// gate holds the next apply (the middle of a batch) until released.
type gate struct {
	entered, release chan struct{}
	once             sync.Once
}

func (g *gate) hold() {
	close(g.entered)
	<-g.release
}

func (g *gate) open() { g.once.Do(func() { close(g.release) }) }

// holdNext makes the next record applied block until the returned gate is
// opened; the test's end opens it in any case.
func (l *ledger) holdNext(tb testing.TB) *gate {
	g := &gate{entered: make(chan struct{}), release: make(chan struct{})}
	tb.Cleanup(g.open)
	l.gate.Store(g)
	return g
}

// model is a ledger read model, as dumped from Redis or folded from the
// store's feed.
type model struct {
	Version    map[string]int64
	Balance    map[string]int64
	Count      map[string]int64
	Total      int64
	Violations []string
	// Unknown lists keys of the namespace the model does not define.
	Unknown []string
}

func newModel() *model {
	return &model{Version: map[string]int64{}, Balance: map[string]int64{}, Count: map[string]int64{}}
}

func (m *model) apply(rec eventstore.Record) {
	var p payload
	if err := json.Unmarshal(rec.Data, &p); err != nil {
		m.Violations = append(m.Violations, fmt.Sprintf("%s v%d: bad payload", rec.StreamID, rec.Version))
		return
	}
	if rec.Type == "Withdrawn" {
		p.Amount = -p.Amount
	}
	if prev := m.Version[rec.StreamID]; rec.Version != prev+1 {
		m.Violations = append(m.Violations, fmt.Sprintf("%s: v%d then v%d", rec.StreamID, prev, rec.Version))
	}
	m.Version[rec.StreamID] = rec.Version
	m.Balance[rec.StreamID] += p.Amount
	m.Count[rec.StreamID]++
	m.Total++
}

// feed returns the store's feed up to head.
func (e *env) feed(head eventstore.Position) []eventstore.Record {
	e.tb.Helper()
	var (
		all   []eventstore.Record
		after eventstore.Position
	)
	for {
		recs, err := e.store.ReadAll(context.Background(), after, 1000)
		require.NoError(e.tb, err)
		for _, r := range recs {
			if r.Position.After(head) {
				return all
			}
			all = append(all, r)
		}
		if len(recs) < 1000 {
			return all
		}
		after = recs[len(recs)-1].Position
	}
}

// fold computes the read model straight from records in feed order,
// leaving out those skip selects.
func fold(recs []eventstore.Record, skip func(eventstore.Record) bool) *model {
	m := newModel()
	for _, r := range recs {
		if skip == nil || !skip(r) {
			m.apply(r)
		}
	}
	return m
}

// dump reads the ledger model of namespace ns from Redis.
func (e *env) dump(ns projection.Namespace) *model {
	e.tb.Helper()
	ctx := context.Background()
	m := newModel()
	stem := ns.Key() + ":"
	keys, err := scanKeys(ctx, e.rdb, stem)
	require.NoError(e.tb, err)
	hash := func(key string, into map[string]int64) {
		vals, err := e.rdb.HGetAll(ctx, key).Result()
		require.NoError(e.tb, err)
		for f, v := range vals {
			n, err := strconv.ParseInt(v, 10, 64)
			require.NoError(e.tb, err)
			into[f] = n
		}
	}
	for _, k := range keys {
		switch strings.TrimPrefix(k, stem) {
		case "version":
			hash(k, m.Version)
		case "balance":
			hash(k, m.Balance)
		case "count":
			hash(k, m.Count)
		case "total":
			m.Total, err = e.rdb.Get(ctx, k).Int64()
			require.NoError(e.tb, err)
		case "violations":
			m.Violations, err = e.rdb.LRange(ctx, k, 0, -1).Result()
			require.NoError(e.tb, err)
		default:
			m.Unknown = append(m.Unknown, k)
		}
	}
	slices.Sort(m.Unknown)
	return m
}

func scanKeys(ctx context.Context, rdb redis.Cmdable, prefix string) ([]string, error) {
	var (
		keys   []string
		cursor uint64
	)
	for {
		ks, next, err := rdb.Scan(ctx, cursor, prefix+"*", 1000).Result()
		if err != nil {
			return nil, err
		}
		keys = append(keys, ks...)
		if cursor = next; cursor == 0 {
			return keys, nil
		}
	}
}

// reader returns a Reader of the environment's projections.
func (e *env) reader() *projection.Reader { return projection.NewReader(e.rdb, e.prefix, e.store) }

// activeModel dumps the projection's active namespace.
func (e *env) activeModel() (*model, projection.Namespace) {
	e.tb.Helper()
	ns, err := e.reader().Namespace(context.Background(), ledgerPN)
	require.NoError(e.tb, err)
	return e.dump(ns), ns
}

// settle waits until the store's feed shows every append a made (a
// transaction still running anywhere on the PostgreSQL server holds the
// feed back, never reorders it) and the projection's checkpoint has
// reached that head, which it returns.
func (e *env) settle(a *appender) eventstore.Position {
	e.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	_, last := a.appended()
	var head eventstore.Position
	require.Eventually(e.tb, func() bool {
		var err error
		head, err = e.store.Head(ctx)
		require.NoError(e.tb, err)
		return !head.Before(last)
	}, waitLimit, time.Millisecond, "the feed shows every append")
	require.NoError(e.tb, e.reader().WaitFor(ctx, ledgerPN, head), "projection catching up with the store's head")
	return head
}

// verify checks the end state once the appends have stopped: the read
// model equals the fold of the store's feed, with every successful append
// in it once, and so does a fresh blue/green rebuild; JetStream holds
// every event exactly once.
func (e *env) verify(active *runnerProc, a *appender) {
	e.tb.Helper()
	ctx := context.Background()
	recs := e.feed(e.settle(a))
	want := fold(recs, nil)
	require.Empty(e.tb, want.Violations, "the store's feed keeps each stream's order")
	appended, _ := a.appended()
	var missing, doubled, unknown []uuid.UUID
	for id, n := range idsOf(recs) {
		switch {
		case appended[id] == 0:
			unknown = append(unknown, id)
		case n > 1:
			doubled = append(doubled, id)
		}
		delete(appended, id)
	}
	for id := range appended {
		missing = append(missing, id)
	}
	require.Empty(e.tb, missing, "successful appends missing from the feed")
	require.Empty(e.tb, doubled, "events in the feed twice")
	require.Empty(e.tb, unknown, "events in the feed nobody appended")
	require.Positive(e.tb, want.Total)

	got, ns := e.activeModel()
	require.Equal(e.tb, want, got, "read model of %s equals the fold of the feed", ns)
	st, err := e.reader().Status(ctx, ledgerPN)
	require.NoError(e.tb, err)
	require.Zero(e.tb, st.Parked)

	require.Eventually(e.tb, func() bool { return active.runner.Active(ledgerPN) }, waitLimit, 5*time.Millisecond)
	rctx, cancel := context.WithTimeout(ctx, waitLimit)
	defer cancel()
	require.NoError(e.tb, active.runner.Rebuild(rctx, ledgerPN))
	rebuilt, ns2 := e.activeModel()
	require.Equal(e.tb, ns.Version+1, ns2.Version)
	require.Equal(e.tb, want, rebuilt, "rebuilt read model %s equals the fold of the feed", ns2)

	// The relay published every event once (re-publications fall into the
	// duplicate window). It publishes on its own schedule, after a change
	// of leader from the checkpoint: wait until it has reached the feed's
	// count, then check that it holds no more.
	s, err := e.js.Stream(ctx, e.stream)
	require.NoError(e.tb, err)
	var msgs uint64
	require.Eventually(e.tb, func() bool {
		info, err := s.Info(ctx)
		require.NoError(e.tb, err)
		msgs = info.State.Msgs
		return msgs >= uint64(len(recs))
	}, waitLimit, 10*time.Millisecond, "the relay publishes every event of the feed")
	require.Equal(e.tb, uint64(len(recs)), msgs, "JetStream holds every event once")
}

func idsOf(recs []eventstore.Record) map[uuid.UUID]int {
	m := make(map[uuid.UUID]int, len(recs))
	for _, r := range recs {
		m[r.ID]++
	}
	return m
}

// ---- load ----

// appender appends from several goroutines until stopped: each worker
// writes its own streams (with exact expected versions), streams shared by
// all workers (with Any, so writers of one stream race) and now and then
// two streams atomically.
type appender struct {
	e      *env
	stopCh chan struct{}
	wg     sync.WaitGroup
	n      atomic.Int64

	mu   sync.Mutex
	ids  map[uuid.UUID]int
	last eventstore.Position // the largest Position of an append
}

func (e *env) startAppenders(workers int, every time.Duration) *appender {
	a := &appender{e: e, stopCh: make(chan struct{}), ids: make(map[uuid.UUID]int)}
	for w := range workers {
		a.wg.Go(func() { a.work(w, every) })
	}
	e.tb.Cleanup(a.stop)
	return a
}

func newEvent(amount int64) eventstore.Event {
	typ := "Deposited"
	if amount < 0 {
		typ, amount = "Withdrawn", -amount
	}
	data, _ := json.Marshal(payload{Amount: amount})
	return eventstore.Event{ID: eventstore.NewEventID(), Type: typ, Data: data,
		Metadata: eventstore.Metadata{eventstore.MetaCorrelationID: uuid.NewString()}}
}

func (a *appender) work(w int, every time.Duration) {
	// Appends use a context that stopping does not cancel: an append whose
	// outcome is unknown would make the expected feed unknown.
	ctx := context.Background()
	tick := time.NewTicker(every)
	defer tick.Stop()
	own := make(map[string]int64)
	for i := 0; ; i++ {
		select {
		case <-a.stopCh:
			return
		case <-tick.C:
		}
		mine := fmt.Sprintf("acct-w%d.%d", w, i%7)
		shared := fmt.Sprintf("acct-shared %d", i%3)
		var (
			evs []eventstore.Event
			res eventstore.AppendResult
			err error
		)
		switch {
		case i%10 == 9:
			e1, e2 := newEvent(int64(i%50+1)), newEvent(-int64(i%5+1))
			evs = []eventstore.Event{e1, e2}
			res, err = a.e.store.AppendMulti(ctx,
				eventstore.StreamAppend{StreamID: mine, Expected: eventstore.Exact(own[mine]), Events: []eventstore.Event{e1}},
				eventstore.StreamAppend{StreamID: shared, Expected: eventstore.Any, Events: []eventstore.Event{e2}})
			if err == nil {
				own[mine] = res.Streams[0].Version
			}
		case i%3 == 1:
			evs = []eventstore.Event{newEvent(int64(i%20 + 1))}
			res, err = a.e.store.Append(ctx, shared, eventstore.Any, evs...)
		default:
			evs = []eventstore.Event{newEvent(int64(i%30 + 1)), newEvent(-int64(i%7 + 1))}[:1+i%2]
			res, err = a.e.store.Append(ctx, mine, eventstore.Exact(own[mine]), evs...)
			if err == nil {
				own[mine] = res.Version()
			}
		}
		if err != nil {
			a.e.tb.Errorf("append (worker %d): %v", w, err)
			return
		}
		a.add(res.Position, evs...)
		a.n.Add(int64(len(evs)))
	}
}

// add records the events of a successful append (the test's own ones
// too) and its Position.
func (a *appender) add(pos eventstore.Position, evs ...eventstore.Event) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if pos.After(a.last) {
		a.last = pos
	}
	for _, ev := range evs {
		a.ids[ev.ID]++
	}
}

// stop stops the workers and waits for their last appends.
func (a *appender) stop() {
	select {
	case <-a.stopCh:
	default:
		close(a.stopCh)
	}
	a.wg.Wait()
}

// count returns how many events were appended so far.
func (a *appender) count() int64 { return a.n.Load() }

// waitMore waits until n more events have been appended.
func (a *appender) waitMore(n int64) {
	a.e.tb.Helper()
	target := a.count() + n
	require.Eventually(a.e.tb, func() bool { return a.count() >= target }, waitLimit, 2*time.Millisecond,
		"appends go on")
}

func (a *appender) appended() (map[uuid.UUID]int, eventstore.Position) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.ids), a.last
}

// checkpoint returns the projection's checkpoint.
func (e *env) checkpoint() eventstore.Position {
	e.tb.Helper()
	p, err := e.reader().Checkpoint(context.Background(), ledgerPN)
	require.NoError(e.tb, err)
	return p
}

// waitProgress waits until the projection's checkpoint moves past where it
// is now.
func (e *env) waitProgress() {
	e.tb.Helper()
	from := e.checkpoint()
	require.Eventually(e.tb, func() bool {
		p, err := e.reader().Checkpoint(context.Background(), ledgerPN)
		return err == nil && p.After(from)
	}, waitLimit, 2*time.Millisecond, "projection makes progress")
}
