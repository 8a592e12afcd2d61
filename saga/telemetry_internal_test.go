package saga

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eskit/eskit/commandbus"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/memstore"
	"github.com/eskit/eskit/lease"
	"github.com/eskit/eskit/telemetry"
)

// The instance and deadline figures are per partition: each refresh
// counts its own partition, a partition whose deadlines fired reports
// none overdue, and a dropped partition (lost to another runner) is no
// longer reported.
func TestMetricsPerPartition(t *testing.T) {
	ctx := context.Background()
	store := NewMemoryStore()
	due := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	now := due.Add(5 * time.Second)
	fences := make([]Fence, 2)
	for p := range fences {
		c, err := store.Claim(ctx, Fence{Saga: "s", Partition: p})
		if err != nil {
			t.Fatal(err)
		}
		fences[p] = Fence{Saga: "s", Partition: p, Token: c.Token}
	}
	commit := func(f Fence, u ...Update) {
		t.Helper()
		if err := store.Commit(ctx, Commit{Fence: f, Updates: u, Now: now}); err != nil {
			t.Fatal(err)
		}
	}
	commit(fences[0], Update{ID: "a", State: []byte(`{}`)}, Update{ID: "b", State: []byte(`{}`), Complete: true})
	commit(fences[1], Update{ID: "c", Partition: 1, State: []byte(`{}`), Schedule: []Deadline{{Name: "d", ID: uuid.New(), Due: due}}})

	m := newMetrics(telemetry.NewConfig(), "s", func() time.Time { return now })
	for _, f := range fences {
		if err := m.refresh(ctx, store, f); err != nil {
			t.Fatal(err)
		}
	}
	snapshot := func() map[int]partitionStats {
		m.mu.Lock()
		defer m.mu.Unlock()
		out := map[int]partitionStats{}
		for p, ps := range m.parts {
			out[p] = *ps
		}
		return out
	}
	got := snapshot()
	if c := got[0].counts; c[StatusRunning] != 1 || c[StatusDone] != 1 || len(c) != 2 || !got[0].oldestDue.IsZero() {
		t.Fatalf("partition 0: %+v", got[0])
	}
	if c := got[1].counts; c[StatusWaiting] != 1 || len(c) != 1 || !got[1].oldestDue.Equal(due) {
		t.Fatalf("partition 1: %+v", got[1])
	}
	m.firedUpTo(1, due.Add(-time.Second))
	if got := snapshot(); !got[1].oldestDue.Equal(due) {
		t.Fatalf("a horizon before the deadline cleared it: %+v", got[1])
	}
	m.firedUpTo(1, now)
	if got := snapshot(); !got[1].oldestDue.IsZero() {
		t.Fatalf("partition 1 after its deadlines fired: %+v", got[1])
	}
	m.drop(0)
	if got := snapshot(); len(got) != 1 {
		t.Fatalf("after dropping partition 0: %v", got)
	}
}

type metricsPing struct {
	ID string `json:"id"`
}

// A runner reports the partitions it leads, and stops when it loses them.
func TestRunnerReportsTheLedPartitions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reg := eventstore.NewRegistry()
	if err := eventstore.Register[metricsPing](reg, "m.Ping"); err != nil {
		t.Fatal(err)
	}
	def, err := New("m", reg, reg, On(func(_ eventstore.Record, p metricsPing) string { return p.ID },
		func(context.Context, *Step[struct{}], metricsPing) error { return nil }, Starts()))
	if err != nil {
		t.Fatal(err)
	}
	disp := DispatcherFunc(func(context.Context, any) (commandbus.Result, error) { return commandbus.Result{}, nil })
	r, err := NewRunner(def, NewMemoryStore(), memstore.New(), disp, WithPartitions(3), WithPollInterval(5*time.Millisecond),
		WithLease(lease.NewMemoryStore(), lease.WithTTL(time.Second)), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	reported := func() int {
		r.tel.mu.Lock()
		defer r.tel.mu.Unlock()
		return len(r.tel.parts)
	}
	for reported() != 3 {
		select {
		case <-ctx.Done():
			t.Fatalf("%d partitions reported, want 3", reported())
		case <-time.After(5 * time.Millisecond):
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := reported(); n != 0 {
		t.Fatalf("%d partitions still reported after Run returned", n)
	}
}
