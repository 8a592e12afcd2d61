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

// The runner on PostgreSQL end to end: records applied in order once per
// instance, a deadline fired once per instance, its command sent once,
// under a lease, in partitions.
func TestSagaRunnerOnPostgres(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pool := pgtest.Pool(t)
	schema := pgtest.Name("sagarun")
	es, err := pgstore.New(ctx, pool, pgstore.WithSchema(schema), pgstore.WithAutoMigrate())
	if err != nil {
		t.Fatal(err)
	}
	defer es.Close()
	sagas, err := pgstore.NewSagaStore(pool, schema)
	if err != nil {
		t.Fatal(err)
	}
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
