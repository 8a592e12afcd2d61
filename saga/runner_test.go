package saga_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/memstore"
	"github.com/eskit/eskit/lease"
	"github.com/eskit/eskit/saga"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// world is a shop with its saga, fed the standard scenario: order 1 paid
// (before its stock is reserved), order 2 never paid (its deadline
// fires: compensation), order 3 short of stock (rejected: cancelled).
type world struct {
	shop  *shop
	def   *saga.Definition[Fulfilment]
	sagas *saga.MemoryStore
	clk   *clock
}

func newWorld(t *testing.T) *world {
	t.Helper()
	s, err := newShop(memstore.New())
	if err != nil {
		t.Fatal(err)
	}
	def, err := fulfilment(s)
	if err != nil {
		t.Fatal(err)
	}
	return &world{shop: s, def: def, sagas: saga.NewMemoryStore(), clk: &clock{}}
}

func (w *world) scenario(t *testing.T) {
	t.Helper()
	ctx := testCtx(t)
	for _, c := range []any{
		AddStock{SKU: "widget", Qty: 10},
		PlaceOrder{OrderID: "1", SKU: "widget", Qty: 3},
		PlaceOrder{OrderID: "2", SKU: "widget", Qty: 2},
		PlaceOrder{OrderID: "3", SKU: "widget", Qty: 50},
		PayOrder{OrderID: "1"},
	} {
		if err := send(ctx, w.shop, c); err != nil {
			t.Fatal(err)
		}
	}
	w.clk.Advance(PaymentWindow + time.Second)
}

func (w *world) runner(t *testing.T, store saga.Store, feed eventstore.FeedReader, disp saga.Dispatcher, opts ...saga.RunnerOption) *saga.Runner[Fulfilment] {
	t.Helper()
	if store == nil {
		store = w.sagas
	}
	if feed == nil {
		feed = w.shop.store
	}
	if disp == nil {
		disp = w.shop.bus
	}
	opts = append([]saga.RunnerOption{saga.WithClock(w.clk.Now), saga.WithLogger(quiet),
		saga.WithDispatchRetry(3, backoff.Policy{Initial: time.Millisecond, Max: time.Millisecond})}, opts...)
	r, err := saga.NewRunner(w.def, store, feed, disp, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// check asserts the scenario's outcome, each command applied once.
func (w *world) check(t *testing.T) {
	t.Helper()
	ctx := testCtx(t)
	want := map[string][]string{
		"stock-widget": {"shop.StockAdded", "shop.StockReserved", "shop.StockReserved", "shop.StockReleased"},
		"order-1":      {"shop.OrderPlaced", "shop.OrderPaid", "shop.OrderConfirmed"},
		"order-2":      {"shop.OrderPlaced", "shop.OrderCancelled"},
		"order-3":      {"shop.OrderPlaced", "shop.OrderCancelled"},
	}
	for stream, types := range want {
		recs, err := eventstore.Collect(w.shop.store.ReadStream(ctx, stream, 1))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range recs {
			got = append(got, r.Type)
		}
		if strings.Join(got, ",") != strings.Join(types, ",") {
			t.Errorf("%s: %v, want %v", stream, got, types)
		}
	}
	for id, want := range map[string]string{"1": "confirmed", "2": "cancelled payment timeout", "3": "cancelled out of stock"} {
		o, _, err := w.shop.orders.Load(ctx, "order-"+id)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(o.Status + " " + o.Reason); got != want {
			t.Errorf("order %s: %q, want %q", id, got, want)
		}
	}
	for _, id := range []string{"1", "2", "3"} {
		in, err := w.sagas.Get(ctx, w.def.Name(), id)
		if err != nil {
			t.Fatal(err)
		}
		if in.Status != saga.StatusDone || len(in.Commands) != 0 || len(in.Deadlines) != 0 || in.Held != 0 {
			t.Errorf("instance %s: %+v", id, in)
		}
	}
}

func TestScenario(t *testing.T) {
	w := newWorld(t)
	w.scenario(t)
	if err := w.runner(t, nil, nil, nil).Drain(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	w.check(t)
}

// faulty fails its n-th write: before writing (a crash before the
// commit) or after (a crash after it, before the runner goes on).
type faulty struct {
	saga.Store
	n     int64
	after bool
	count atomic.Int64
}

var errCrash = errors.New("crash")

func (f *faulty) write(fn func() error) error {
	if f.count.Add(1) != f.n {
		return fn()
	}
	if f.after {
		if err := fn(); err != nil {
			return err
		}
	}
	return errCrash
}

func (f *faulty) Commit(ctx context.Context, c saga.Commit) error {
	return f.write(func() error { return f.Store.Commit(ctx, c) })
}

func (f *faulty) Sent(ctx context.Context, fe saga.Fence, id string, seq int64) error {
	return f.write(func() error { return f.Store.Sent(ctx, fe, id, seq) })
}

func (f *faulty) Failed(ctx context.Context, fe saga.Fence, id string, c saga.Command, park bool) error {
	return f.write(func() error { return f.Store.Failed(ctx, fe, id, c, park) })
}

// A crash at every write the runner makes, before or after the write,
// ends, after a restart, with the same outcome: each command applied
// once (the re-sent ones recognised by their IDs), each deadline fired
// once.
func TestCrashAtEveryWrite(t *testing.T) {
	for _, after := range []bool{false, true} {
		for n := int64(1); ; n++ {
			w := newWorld(t)
			w.scenario(t)
			f := &faulty{Store: w.sagas, n: n, after: after}
			err := w.runner(t, f, nil, nil).Drain(testCtx(t))
			if err == nil {
				if f.count.Load() >= n {
					t.Fatalf("write %d: the crash was swallowed", n)
				}
				w.check(t)
				t.Logf("after=%v: crashed at each of %d writes", after, n-1)
				break
			}
			if !errors.Is(err, errCrash) {
				t.Fatalf("write %d: %v", n, err)
			}
			// Restart: a new runner on the same stores.
			if err := w.runner(t, nil, nil, nil).Drain(testCtx(t)); err != nil {
				t.Fatalf("write %d: after the restart: %v", n, err)
			}
			w.check(t)
			if t.Failed() {
				t.Fatalf("crash at write %d (after=%v)", n, after)
			}
		}
	}
}

// hostileFeed repeats and reorders records: each page comes back
// shuffled, with records from before the asked position and repeats.
type hostileFeed struct {
	eventstore.FeedReader
	rnd *rand.Rand
	mu  sync.Mutex
}

func (h *hostileFeed) ReadAll(ctx context.Context, after eventstore.Position, limit int) ([]eventstore.Record, error) {
	all, err := h.FeedReader.ReadAll(ctx, eventstore.Position{}, 1<<20)
	if err != nil {
		return nil, err
	}
	var page []eventstore.Record
	last := 0
	for i, r := range all {
		if r.Position.After(after) && len(page) < limit {
			page = append(page, r)
			last = i
		}
	}
	if len(page) == 0 {
		return nil, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	// Duplicates from the past or the page itself (never from beyond it:
	// that would be a gap, which a feed cannot have).
	for range len(page) {
		page = append(page, all[h.rnd.IntN(last+1)])
	}
	h.rnd.Shuffle(len(page), func(i, j int) { page[i], page[j] = page[j], page[i] })
	return page, nil
}

func TestDuplicateAndOutOfOrderDelivery(t *testing.T) {
	w := newWorld(t)
	w.scenario(t)
	feed := &hostileFeed{FeedReader: w.shop.store, rnd: rand.New(rand.NewPCG(1, 2))}
	if err := w.runner(t, nil, feed, nil, saga.WithBatchSize(2)).Drain(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	w.check(t)
}

// Per-instance order under a hostile feed: a saga that logs the records
// it applies.
type Ping struct {
	Instance string `json:"instance"`
	N        int    `json:"n"`
}

type pingLog struct{ Seen []int }

func pingSaga(t *testing.T, fail func(Ping) error) (*saga.Definition[pingLog], *eventstore.Registry) {
	t.Helper()
	reg := eventstore.NewRegistry()
	if err := eventstore.Register[Ping](reg, "test.Ping"); err != nil {
		t.Fatal(err)
	}
	def, err := saga.New("pings", reg, reg,
		saga.On(func(_ eventstore.Record, p Ping) string { return p.Instance },
			func(_ context.Context, s *saga.Step[pingLog], p Ping) error {
				if fail != nil {
					if err := fail(p); err != nil {
						return err
					}
				}
				s.State().Seen = append(s.State().Seen, p.N)
				return nil
			}, saga.Starts()))
	if err != nil {
		t.Fatal(err)
	}
	return def, reg
}

func appendPings(t *testing.T, store eventstore.Store, reg *eventstore.Registry, instances []string, n int) {
	t.Helper()
	for i := range n {
		for j, id := range instances {
			ev, err := reg.Encode(Ping{Instance: id, N: i}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := store.Append(testCtx(t), fmt.Sprintf("ping-%d", (i+j)%3), eventstore.Any, ev); err != nil {
				t.Fatal(err)
			}
		}
	}
}

var nobody = saga.DispatcherFunc(func(context.Context, any) (commandbus.Result, error) {
	return commandbus.Result{}, errors.New("no commands expected")
})

func seen(t *testing.T, store saga.Store, id string) []int {
	t.Helper()
	in, err := store.Get(testCtx(t), "pings", id)
	if err != nil {
		t.Fatal(err)
	}
	var l struct{ Seen []int }
	if err := jsonUnmarshal(in.State, &l); err != nil {
		t.Fatal(err)
	}
	return l.Seen
}

func wantSeq(t *testing.T, what string, got []int, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("%s: applied %v, want 0..%d once each in order", what, got, n-1)
	}
	for i, v := range got {
		if v != i {
			t.Fatalf("%s: applied %v, want 0..%d once each in order", what, got, n-1)
		}
	}
}

func TestPerInstanceOrderUnderAHostileFeed(t *testing.T) {
	es := memstore.New()
	def, reg := pingSaga(t, nil)
	ids := []string{"a", "ü-日本-🚀", strings.Repeat("long", 200), "d"}
	appendPings(t, es, reg, ids, 20)
	store := saga.NewMemoryStore()
	feed := &hostileFeed{FeedReader: es, rnd: rand.New(rand.NewPCG(3, 4))}
	r, err := saga.NewRunner(def, store, feed, nobody, saga.WithBatchSize(7), saga.WithPartitions(3), saga.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Drain(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		wantSeq(t, id[:min(len(id), 12)], seen(t, store, id), 20)
	}
}

// A record naming an invalid instance (NUL, too long) is passed over with
// an error logged; the others go on.
func TestHostileInstanceIDs(t *testing.T) {
	es := memstore.New()
	def, reg := pingSaga(t, nil)
	appendPings(t, es, reg, []string{"ok", "bad\x00id", strings.Repeat("x", saga.MaxInstanceIDLength+1)}, 3)
	store := saga.NewMemoryStore()
	var logs strings.Builder
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), nil))
	r, err := saga.NewRunner(def, store, es, nobody, saga.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Drain(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	wantSeq(t, "ok", seen(t, store, "ok"), 3)
	all, _ := store.List(testCtx(t), "pings", saga.Filter{})
	if len(all) != 1 {
		t.Fatalf("instances: %d, want only ok", len(all))
	}
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(logs.String(), "names an invalid instance"); n != 6 {
		t.Fatalf("logged %d invalid instances, want 6:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "contains NUL") || !strings.Contains(logs.String(), "limit 1024") {
		t.Fatalf("the logs do not say why:\n%s", logs.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// A step that keeps failing parks its instance with the record held;
// later records of that instance are held behind it, in order, while the
// other instances go on. Retry applies them; Skip drops the failing one.
func TestParkedStepRetryAndSkip(t *testing.T) {
	es := memstore.New()
	var broken atomic.Bool
	broken.Store(true)
	def, reg := pingSaga(t, func(p Ping) error {
		if broken.Load() && (p.Instance == "retry" || p.Instance == "skip") && p.N == 1 {
			return errors.New("step broken")
		}
		return nil
	})
	appendPings(t, es, reg, []string{"retry", "skip", "fine"}, 4)
	store := saga.NewMemoryStore()
	r, err := saga.NewRunner(def, store, es, nobody, saga.WithLogger(quiet), saga.WithStepRetry(2, backoff.Policy{Initial: time.Millisecond, Max: time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	if err := r.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	wantSeq(t, "fine", seen(t, store, "fine"), 4)
	for _, id := range []string{"retry", "skip"} {
		in, err := store.Get(ctx, "pings", id)
		if err != nil {
			t.Fatal(err)
		}
		if in.Status != saga.StatusParked || in.Park.Kind != saga.ParkRecord || in.Park.Attempts != 2 || !strings.Contains(in.Park.Error, "step broken") || in.Held != 3 {
			t.Fatalf("%s: %+v park %+v", id, in, in.Park)
		}
		wantSeq(t, id, seen(t, store, id), 1)
	}
	if parked, _ := store.List(ctx, "pings", saga.Filter{Status: saga.StatusParked}); len(parked) != 2 {
		t.Fatalf("parked: %d", len(parked))
	}
	broken.Store(false)
	if err := store.Retry(ctx, "pings", "retry"); err != nil {
		t.Fatal(err)
	}
	if err := store.Skip(ctx, "pings", "skip"); err != nil {
		t.Fatal(err)
	}
	if err := r.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	wantSeq(t, "retry", seen(t, store, "retry"), 4)
	if got := seen(t, store, "skip"); fmt.Sprint(got) != "[0 2 3]" {
		t.Fatalf("skip: applied %v, want [0 2 3]", got)
	}
}

// A command that keeps failing parks its instance, not the others; Retry
// sends it again; Skip drops it.
func TestParkedCommandRetryAndSkip(t *testing.T) {
	w := newWorld(t)
	ctx := testCtx(t)
	var down atomic.Bool
	down.Store(true)
	var calls atomic.Int64
	disp := saga.DispatcherFunc(func(ctx context.Context, cmd any) (commandbus.Result, error) {
		calls.Add(1)
		if c, ok := cmd.(ReserveStock); ok && down.Load() && (c.OrderID == "r" || c.OrderID == "s") {
			return commandbus.Result{}, errors.New("stock service down")
		}
		return w.shop.bus.Dispatch(ctx, cmd)
	})
	for _, c := range []any{AddStock{SKU: "widget", Qty: 10}, PlaceOrder{OrderID: "r", SKU: "widget", Qty: 1}, PlaceOrder{OrderID: "s", SKU: "widget", Qty: 1},
		PlaceOrder{OrderID: "ok", SKU: "widget", Qty: 1}, PayOrder{OrderID: "ok"}} {
		if err := send(ctx, w.shop, c); err != nil {
			t.Fatal(err)
		}
	}
	r := w.runner(t, nil, nil, disp)
	// Drain stops at commands not due yet: drain until both are parked.
	waitFor(t, func() bool {
		if err := r.Drain(ctx); err != nil {
			t.Fatal(err)
		}
		c, _ := w.sagas.Count(ctx, w.def.Name())
		return c[saga.StatusParked] == 2
	})
	if in, _ := w.sagas.Get(ctx, w.def.Name(), "ok"); in.Status != saga.StatusDone {
		t.Fatalf("ok: %+v", in)
	}
	for _, id := range []string{"r", "s"} {
		in, _ := w.sagas.Get(ctx, w.def.Name(), id)
		if in.Status != saga.StatusParked || in.Park.Kind != saga.ParkCommand || in.Park.Attempts != 3 || !strings.Contains(in.Park.Error, "stock service down") {
			t.Fatalf("%s: %+v park %+v", id, in, in.Park)
		}
	}
	// r's payment, paid while r is parked, is held back in order.
	if err := send(ctx, w.shop, PayOrder{OrderID: "r"}); err != nil {
		t.Fatal(err)
	}
	if err := r.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if in, _ := w.sagas.Get(ctx, w.def.Name(), "r"); in.Held != 1 {
		t.Fatalf("r holds %d records, want its payment", in.Held)
	}
	down.Store(false)
	if err := w.sagas.Retry(ctx, w.def.Name(), "r"); err != nil {
		t.Fatal(err)
	}
	if err := w.sagas.Skip(ctx, w.def.Name(), "s"); err != nil {
		t.Fatal(err)
	}
	if err := r.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if o, _, _ := w.shop.orders.Load(ctx, "order-r"); o.Status != "confirmed" {
		t.Fatalf("order r: %+v", o)
	}
	if in, _ := w.sagas.Get(ctx, w.def.Name(), "s"); in.Status != saga.StatusRunning || len(in.Commands) != 0 {
		t.Fatalf("s after skip: %+v", in)
	}
	if avail, _, _ := w.shop.stock.Load(ctx, "stock-widget"); avail != 8 {
		t.Fatalf("stock: %d, want 8 (ok and r reserved, s skipped)", avail)
	}
}

// gated blocks a runner's deadline commit until released: a holder that
// froze between its lease check and its write.
type gated struct {
	saga.Store
	reached chan struct{}
	release chan struct{}
	once    sync.Once
	err     chan error
}

func (g *gated) Commit(ctx context.Context, c saga.Commit) error {
	for _, u := range c.Updates {
		if u.Fired != nil {
			g.once.Do(func() { close(g.reached) })
			<-g.release
			err := g.Store.Commit(context.WithoutCancel(ctx), c)
			g.err <- err
			return err
		}
	}
	return g.Store.Commit(ctx, c)
}

// flaky fails renewals once told to: the holder loses its lease.
type flaky struct {
	lease.Store
	fail atomic.Bool
}

func (f *flaky) Renew(ctx context.Context, l lease.Lease, ttl time.Duration) (lease.Lease, error) {
	if f.fail.Load() {
		return lease.Lease{}, errors.New("partitioned")
	}
	return f.Store.Renew(ctx, l, ttl)
}

// counting counts the committed firings of deadlines.
type counting struct {
	saga.Store
	fired atomic.Int64
}

func (c *counting) Commit(ctx context.Context, cm saga.Commit) error {
	err := c.Store.Commit(ctx, cm)
	if err == nil {
		for _, u := range cm.Updates {
			if u.Fired != nil {
				c.fired.Add(1)
			}
		}
	}
	return err
}

// A deadline fires once across a takeover: the leader freezes in the
// middle of the deadline's commit and loses its lease; the standby takes
// over, fires the deadline; the old leader's late commit is refused by
// its fencing token.
func TestDeadlineOnceAcrossTakeover(t *testing.T) {
	w := newWorld(t)
	ctx := testCtx(t)
	// Order 2 only: reserved, never paid.
	for _, c := range []any{AddStock{SKU: "widget", Qty: 10}, PlaceOrder{OrderID: "2", SKU: "widget", Qty: 2}} {
		if err := send(ctx, w.shop, c); err != nil {
			t.Fatal(err)
		}
	}
	leases := lease.NewMemoryStore()
	count := &counting{Store: w.sagas}
	g := &gated{Store: count, reached: make(chan struct{}), release: make(chan struct{}), err: make(chan error, 1)}
	flakyLeases := &flaky{Store: leases}
	ttl := []lease.Option{lease.WithTTL(300 * time.Millisecond), lease.WithRetryInterval(20 * time.Millisecond)}
	a := w.runner(t, g, nil, nil, saga.WithLease(flakyLeases, ttl...), saga.WithPollInterval(10*time.Millisecond))
	actx, stopA := context.WithCancel(ctx)
	aDone := make(chan error, 1)
	go func() { aDone <- a.Run(actx) }()
	defer func() {
		stopA()
		if err := <-aDone; err != nil {
			t.Errorf("runner a: %v", err)
		}
	}()
	// Wait until a scheduled the deadline, then let it fall due.
	waitFor(t, func() bool {
		in, err := w.sagas.Get(ctx, w.def.Name(), "2")
		return err == nil && len(in.Deadlines) == 1
	})
	w.clk.Advance(PaymentWindow + time.Second)
	select {
	case <-g.reached:
	case <-ctx.Done():
		t.Fatal("runner a never fired the deadline")
	}
	// a is frozen inside its commit; its lease lapses; b takes over.
	flakyLeases.fail.Store(true)
	b := w.runner(t, count, nil, nil, saga.WithLease(leases, ttl...), saga.WithPollInterval(10*time.Millisecond))
	bctx, stopB := context.WithCancel(ctx)
	bDone := make(chan error, 1)
	go func() { bDone <- b.Run(bctx) }()
	waitFor(t, func() bool {
		o, _, err := w.shop.orders.Load(ctx, "order-2")
		in, gerr := w.sagas.Get(ctx, w.def.Name(), "2")
		return err == nil && gerr == nil && o.Status == "cancelled" && len(in.Commands) == 0
	})
	// a wakes up and writes: refused.
	close(g.release)
	if err := <-g.err; !errors.Is(err, saga.ErrFenced) || !errors.Is(err, lease.ErrFenced) {
		t.Fatalf("the deposed leader's commit: %v, want it fenced off", err)
	}
	stopB()
	if err := <-bDone; err != nil {
		t.Fatalf("runner b: %v", err)
	}
	if n := count.fired.Load(); n != 1 {
		t.Fatalf("the deadline fired %d times", n)
	}
	recs, _ := eventstore.Collect(w.shop.store.ReadStream(ctx, "stock-widget", 1))
	if len(recs) != 3 || recs[2].Type != "shop.StockReleased" {
		t.Fatalf("stock events: %d, want added, reserved, released once", len(recs))
	}
	if in, _ := w.sagas.Get(ctx, w.def.Name(), "2"); in.Status != saga.StatusDone || len(in.Commands) != 0 {
		t.Fatalf("instance 2: %+v", in)
	}
}

// A deadline fires once across restarts of a runner without a lease.
func TestDeadlineOnceAcrossRestart(t *testing.T) {
	w := newWorld(t)
	ctx := testCtx(t)
	for _, c := range []any{AddStock{SKU: "widget", Qty: 10}, PlaceOrder{OrderID: "2", SKU: "widget", Qty: 2}} {
		if err := send(ctx, w.shop, c); err != nil {
			t.Fatal(err)
		}
	}
	count := &counting{Store: w.sagas}
	if err := w.runner(t, count, nil, nil).Drain(ctx); err != nil {
		t.Fatal(err)
	}
	w.clk.Advance(PaymentWindow + time.Second)
	for range 3 {
		if err := w.runner(t, count, nil, nil).Drain(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := count.fired.Load(); n != 1 {
		t.Fatalf("fired %d times", n)
	}
}

// Run without a lease stops with ErrFenced when another runner claims the
// partition.
func TestRunFencedWithoutLease(t *testing.T) {
	w := newWorld(t)
	ctx := testCtx(t)
	r := w.runner(t, nil, nil, nil, saga.WithPollInterval(5*time.Millisecond))
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	// Once the runner has handled an order, it holds its claim.
	if err := send(ctx, w.shop, PlaceOrder{OrderID: "first", SKU: "widget", Qty: 1}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		_, ok, err := w.sagas.Load(ctx, w.def.Name(), "first")
		return err == nil && ok
	})
	if _, err := w.sagas.Claim(ctx, saga.Fence{Saga: w.def.Name(), Partition: 0}); err != nil {
		t.Fatal(err)
	}
	if err := send(ctx, w.shop, PlaceOrder{OrderID: "x", SKU: "widget", Qty: 1}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, saga.ErrFenced) {
			t.Fatalf("Run: %v, want ErrFenced", err)
		}
	case <-ctx.Done():
		t.Fatal("Run went on under a stale token")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// A deadline whose step keeps failing parks its instance on the deadline;
// Retry fires it again, once.
func TestParkedDeadlineRetry(t *testing.T) {
	es := memstore.New()
	reg := eventstore.NewRegistry()
	if err := eventstore.Register[Ping](reg, "test.Ping"); err != nil {
		t.Fatal(err)
	}
	var broken atomic.Bool
	broken.Store(true)
	var fired atomic.Int64
	def, err := saga.New("pings", reg, reg,
		saga.On(func(_ eventstore.Record, p Ping) string { return p.Instance },
			func(_ context.Context, s *saga.Step[pingLog], p Ping) error {
				s.After("t", time.Minute)
				return nil
			}, saga.Starts()),
		saga.OnDeadline("t", func(_ context.Context, s *saga.Step[pingLog]) error {
			if broken.Load() {
				return errors.New("deadline step broken")
			}
			fired.Add(1)
			s.Complete()
			return nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	appendPings(t, es, reg, []string{"a"}, 1)
	var clk clock
	store := saga.NewMemoryStore()
	r, err := saga.NewRunner(def, store, es, nobody, saga.WithLogger(quiet), saga.WithClock(clk.Now),
		saga.WithStepRetry(2, backoff.Policy{Initial: time.Millisecond, Max: time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	if err := r.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if in, _ := store.Get(ctx, "pings", "a"); in.Status != saga.StatusWaiting {
		t.Fatalf("before the deadline: %+v", in)
	}
	clk.Advance(2 * time.Minute)
	if err := r.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	in, _ := store.Get(ctx, "pings", "a")
	if in.Status != saga.StatusParked || in.Park.Kind != saga.ParkDeadline || in.Park.Ref != "t" || len(in.Deadlines) != 1 {
		t.Fatalf("after the failing deadline: %+v park %+v", in, in.Park)
	}
	broken.Store(false)
	if err := store.Retry(ctx, "pings", "a"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := r.Drain(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if in, _ := store.Get(ctx, "pings", "a"); in.Status != saga.StatusDone || fired.Load() != 1 {
		t.Fatalf("after the retry: %+v, fired %d", in, fired.Load())
	}
}

// Run shares the life cycle of outbox.Relay and projection.Runner:
// Started, Ready and Done; a configuration error at once; nil once its
// context ends; a second Run refused.
func TestRunnerLifecycle(t *testing.T) {
	w := newWorld(t)
	ctx := testCtx(t)
	r := w.runner(t, nil, nil, nil, saga.WithLease(lease.NewMemoryStore(), lease.WithTTL(time.Second)), saga.WithPollInterval(5*time.Millisecond))
	if err := r.Ready(); !errors.Is(err, saga.ErrNotStarted) {
		t.Fatalf("Ready before Run = %v", err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	select {
	case <-r.Started():
	case <-ctx.Done():
		t.Fatal("never started")
	}
	if err := r.Ready(); err != nil {
		t.Fatalf("Ready while running = %v", err)
	}
	if err := r.Run(ctx); err == nil {
		t.Fatal("a second Run was accepted")
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run after its context ended = %v, want nil", err)
	}
	<-r.Done()
	if err := r.Ready(); !errors.Is(err, saga.ErrStopped) {
		t.Fatalf("Ready after Run = %v", err)
	}

	// A lease TTL too short for the keeper's renew interval: Run fails at
	// once, with Started and Done closed.
	bad := w.runner(t, nil, nil, nil, saga.WithLease(lease.NewMemoryStore(), lease.WithTTL(time.Second), lease.WithRenewInterval(2*time.Second)))
	err := bad.Run(ctx)
	if !errors.Is(err, lease.ErrInvalidArgument) {
		t.Fatalf("Run with a bad lease config = %v", err)
	}
	<-bad.Started()
	<-bad.Done()
	if rerr := bad.Ready(); !errors.Is(rerr, lease.ErrInvalidArgument) {
		t.Fatalf("Ready after a failed start = %v", rerr)
	}
}

// Adopt takes over from another process manager: the steps over the
// history build the instances' states but send nothing (the other sent
// it), and the saga goes on from there with the records after it.
func TestAdopt(t *testing.T) {
	ctx := testCtx(t)
	w := newWorld(t)
	for _, c := range []any{AddStock{SKU: "widget", Qty: 10}, PlaceOrder{OrderID: "1", SKU: "widget", Qty: 3}} {
		if err := send(ctx, w.shop, c); err != nil {
			t.Fatal(err)
		}
	}
	head, err := w.shop.store.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := w.runner(t, nil, nil, nil)
	for range 2 { // a second Adopt does nothing
		if err := r.Adopt(ctx, head); err != nil {
			t.Fatal(err)
		}
	}
	in, err := w.sagas.Get(ctx, w.def.Name(), "1")
	if err != nil {
		t.Fatal(err)
	}
	if in.Status != saga.StatusRunning || len(in.Commands) != 0 || !strings.Contains(string(in.State), `"widget"`) {
		t.Fatalf("adopted instance: %+v (state %s), want running with its state and no command", in, in.State)
	}
	// The process it replaces reserved the stock; then the order is paid.
	for _, c := range []any{ReserveStock{OrderID: "1", SKU: "widget", Qty: 3}, PayOrder{OrderID: "1"}} {
		if err := send(ctx, w.shop, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	recs, err := eventstore.Collect(w.shop.store.ReadStream(ctx, "stock-widget", 1))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 {
		t.Fatalf("stock stream %d records, want StockAdded and one StockReserved (none re-sent by the saga)", len(recs))
	}
	o, _, err := w.shop.orders.Load(ctx, "order-1")
	if err != nil {
		t.Fatal(err)
	}
	if o.Status != "confirmed" {
		t.Fatalf("order 1 %q, want confirmed by the saga after the adopted history", o.Status)
	}
}
