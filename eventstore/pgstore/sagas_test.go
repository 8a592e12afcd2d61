package pgstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/eventstore/pgstore/pgtest"
	"github.com/eskit/eskit/lease"
	"github.com/eskit/eskit/saga"
	"github.com/eskit/eskit/saga/sagatest"
)

func TestSagaStoreConformance(t *testing.T) {
	pool := pgtest.Pool(t)
	sagatest.Run(t, func(t *testing.T) saga.Store {
		schema := pgtest.Name("sagas")
		if err := pgstore.Migrate(context.Background(), pool, schema); err != nil {
			t.Fatalf("migrate: %v", err)
		}
		s, err := pgstore.NewSagaStore(pool, schema)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

type sagaPing struct {
	Instance string `json:"instance"`
	N        int    `json:"n"`
}

type sagaPong struct {
	Instance string `json:"instance"`
}

type pingState struct {
	Seen []int `json:"seen"`
}

// sagaStores returns a pool, an event store and a saga store on a new
// schema named after name; the event store closes when t ends.
func sagaStores(t *testing.T, ctx context.Context, name string) (*pgxpool.Pool, *pgstore.Store, *pgstore.SagaStore) {
	t.Helper()
	pool := pgtest.Pool(t)
	schema := pgtest.Name(name)
	es, err := pgstore.New(ctx, pool, pgstore.WithSchema(schema), pgstore.WithAutoMigrate())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(es.Close)
	sagas, err := pgstore.NewSagaStore(pool, schema)
	if err != nil {
		t.Fatal(err)
	}
	return pool, es, sagas
}

// The runner on PostgreSQL end to end: records applied in order once per
// instance, a deadline fired once per instance, its command sent once,
// under a lease, in partitions.
func TestSagaRunnerOnPostgres(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, es, sagas := sagaStores(t, ctx, "sagarun")
	reg := eventstore.NewRegistry()
	if err := errors.Join(eventstore.Register[sagaPing](reg, "test.Ping"), eventstore.Register[sagaPong](reg, "test.Pong")); err != nil {
		t.Fatal(err)
	}
	const pings = 5
	def, err := saga.New("pings", reg, reg,
		saga.On(func(_ eventstore.Record, p sagaPing) string { return p.Instance },
			func(_ context.Context, s *saga.Step[pingState], p sagaPing) error {
				s.State().Seen = append(s.State().Seen, p.N)
				if p.N == pings-1 {
					s.After("done", 0)
				}
				return nil
			}, saga.Starts()),
		saga.OnDeadline("done", func(_ context.Context, s *saga.Step[pingState]) error {
			s.Send(sagaPong{Instance: s.ID()})
			s.Complete()
			return nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		pongs = map[string]int{}
	)
	disp := saga.DispatcherFunc(func(ctx context.Context, cmd any) (commandbus.Result, error) {
		id, _ := commandbus.CommandIDFrom(ctx)
		mu.Lock()
		defer mu.Unlock()
		pongs[cmd.(sagaPong).Instance+"/"+id.String()]++
		return commandbus.Result{}, nil
	})
	ids := []string{"a", "ü-🚀", strings.Repeat("z", 500), "it's"}
	for n := range pings {
		for _, id := range ids {
			ev, err := reg.Encode(sagaPing{Instance: id, N: n}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := es.Append(ctx, "ping-"+fmt.Sprint(n%2), eventstore.Any, ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	leases := lease.NewMemoryStore()
	var wg sync.WaitGroup
	runCtx, stop := context.WithCancel(ctx)
	for range 2 {
		r, err := saga.NewRunner(def, sagas, es, disp, saga.WithPartitions(4), saga.WithPollInterval(20*time.Millisecond),
			saga.WithLease(leases, lease.WithTTL(time.Second)))
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			if err := r.Run(runCtx); err != nil {
				t.Errorf("run: %v", err)
			}
		})
	}
	for {
		c, err := sagas.Count(ctx, "pings")
		if err != nil {
			t.Fatal(err)
		}
		outboxes := 0
		for _, id := range ids {
			if in, err := sagas.Get(ctx, "pings", id); err == nil {
				outboxes += len(in.Commands)
			}
		}
		if c[saga.StatusDone] == len(ids) && outboxes == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("not done in time: %v", c)
		case <-time.After(20 * time.Millisecond):
		}
	}
	stop()
	wg.Wait()
	for _, id := range ids {
		in, err := sagas.Get(ctx, "pings", id)
		if err != nil {
			t.Fatal(err)
		}
		var st pingState
		if err := json.Unmarshal(in.State, &st); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(st.Seen) != "[0 1 2 3 4]" || len(in.Commands) != 0 || len(in.Deadlines) != 0 {
			t.Fatalf("%q: seen %v, %+v", id, st.Seen, in)
		}
	}
	if len(pongs) != len(ids) {
		t.Fatalf("pongs: %v, want one command ID per instance", pongs)
	}
	for k, n := range pongs {
		if n != 1 {
			t.Fatalf("pong %s sent %d times", k, n)
		}
	}
}

type chainStarted struct {
	ID string `json:"id"`
}

type chainStep struct {
	ID string `json:"id"`
	N  int    `json:"n"`
}

type chainStepped struct {
	ID string `json:"id"`
	N  int    `json:"n"`
}

// One Drain runs a saga whose commands cause the events it reacts to, to
// its end, though the feed shows each command's events late (a
// transaction begun before the command's append holds the gap-safe feed
// back for a while).
func TestSagaDrainWaitsForItsCommands(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pool, es, sagas := sagaStores(t, ctx, "sagadrain")
	reg := eventstore.NewRegistry()
	if err := errors.Join(eventstore.Register[chainStarted](reg, "chain.Started"), eventstore.Register[chainStep](reg, "chain.Step"),
		eventstore.Register[chainStepped](reg, "chain.Stepped")); err != nil {
		t.Fatal(err)
	}
	const steps = 4
	def, err := saga.New("chain", reg, reg,
		saga.On(func(_ eventstore.Record, e chainStarted) string { return e.ID },
			func(_ context.Context, s *saga.Step[struct{}], e chainStarted) error {
				s.Send(chainStep{ID: e.ID, N: 1})
				return nil
			}, saga.Starts()),
		saga.On(func(_ eventstore.Record, e chainStepped) string { return e.ID },
			func(_ context.Context, s *saga.Step[struct{}], e chainStepped) error {
				if e.N == steps {
					s.Complete()
					return nil
				}
				s.Send(chainStep{ID: e.ID, N: e.N + 1})
				return nil
			}))
	if err != nil {
		t.Fatal(err)
	}
	var blockers sync.WaitGroup
	defer blockers.Wait()
	disp := saga.DispatcherFunc(func(ctx context.Context, cmd any) (commandbus.Result, error) {
		c := cmd.(chainStep)
		// A transaction older than the append holds the feed back.
		blocker, err := pool.Begin(ctx)
		if err != nil {
			return commandbus.Result{}, err
		}
		if _, err := blocker.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil {
			_ = blocker.Rollback(ctx)
			return commandbus.Result{}, err
		}
		blockers.Go(func() {
			time.Sleep(150 * time.Millisecond)
			_ = blocker.Rollback(context.Background())
		})
		id, _ := commandbus.CommandIDFrom(ctx)
		ev, err := reg.Encode(chainStepped(c), nil)
		if err != nil {
			return commandbus.Result{}, err
		}
		ev.ID = id
		res, err := es.Append(ctx, "chain-"+c.ID, eventstore.Any, ev)
		if err != nil {
			return commandbus.Result{}, err
		}
		return commandbus.Result{StreamID: "chain-" + c.ID, Position: res.Position}, nil
	})
	ev, err := reg.Encode(chainStarted{ID: "x"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := es.Append(ctx, "start-x", eventstore.Any, ev); err != nil {
		t.Fatal(err)
	}
	pgtest.SettledHead(t, es)
	r, err := saga.NewRunner(def, sagas, es, disp, saga.WithPartitions(3))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	in, err := sagas.Get(ctx, "chain", "x")
	if err != nil {
		t.Fatal(err)
	}
	if in.Status != saga.StatusDone || len(in.Commands) != 0 {
		t.Fatalf("after one Drain: %+v, want done", in)
	}
	recs, err := eventstore.Collect(es.ReadStream(ctx, "chain-x", 1))
	if err != nil || len(recs) != steps {
		t.Fatalf("chain: %d events (%v), want %d", len(recs), err, steps)
	}
}

// Fencing tokens are 64-bit: a lease store may hand out tokens past 2³¹.
func TestSagaStoreClaimsLargeTokens(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t)
	schema := pgtest.Name("sagatok")
	if err := pgstore.Migrate(ctx, pool, schema); err != nil {
		t.Fatal(err)
	}
	s, err := pgstore.NewSagaStore(pool, schema)
	if err != nil {
		t.Fatal(err)
	}
	const big = uint64(1) << 50
	for _, tok := range []uint64{big, big + 1} {
		c, err := s.Claim(ctx, saga.Fence{Saga: "s", Partition: 0, Token: tok})
		if err != nil || c.Token != tok {
			t.Fatalf("claim %d: %+v, %v", tok, c, err)
		}
	}
	if _, err := s.Claim(ctx, saga.Fence{Saga: "s", Partition: 0, Token: big}); !errors.Is(err, saga.ErrFenced) {
		t.Fatalf("claim with a lower token: %v, want ErrFenced", err)
	}
	if c, err := s.Claim(ctx, saga.Fence{Saga: "s", Partition: 0}); err != nil || c.Token != big+2 {
		t.Fatalf("claim the next token: %+v, %v", c, err)
	}
}

// Sagas lists the sagas that claimed a partition, in order.
func TestSagaStoreListsSagas(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t)
	schema := pgtest.Name("saganames")
	if err := pgstore.Migrate(ctx, pool, schema); err != nil {
		t.Fatal(err)
	}
	s, err := pgstore.NewSagaStore(pool, schema)
	if err != nil {
		t.Fatal(err)
	}
	if names, err := s.Sagas(ctx); err != nil || len(names) != 0 {
		t.Fatalf("sagas of an empty store: %v, %v", names, err)
	}
	for _, f := range []saga.Fence{{Saga: "shipping", Partition: 1}, {Saga: "billing", Partition: 0}, {Saga: "shipping", Partition: 0}} {
		if _, err := s.Claim(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	names, err := s.Sagas(ctx)
	if err != nil || len(names) != 2 || names[0] != "billing" || names[1] != "shipping" {
		t.Fatalf("sagas: %v, %v", names, err)
	}
}
