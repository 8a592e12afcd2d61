package snapshot_test

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/internal/testsvc"
	"github.com/eskit/eskit/snapshot"
)

func stores() map[string]func(t *testing.T) snapshot.Store {
	return map[string]func(t *testing.T) snapshot.Store{
		"memory": func(*testing.T) snapshot.Store { return snapshot.NewMemory() },
		"postgres": func(t *testing.T) snapshot.Store {
			pool := testsvc.Pool(t)
			const schema = "eskit_snap"
			if err := pgstore.Migrate(t.Context(), pool, schema); err != nil {
				t.Fatalf("migrate: %v", err)
			}
			return snapshot.NewPostgres(pool, schema)
		},
	}
}

func TestStores(t *testing.T) {
	for name, newStore := range stores() {
		t.Run(name, func(t *testing.T) {
			t.Run("NotFound", func(t *testing.T) {
				s := newStore(t)
				_, err := s.Load(t.Context(), "missing")
				if !errors.Is(err, snapshot.ErrNotFound) {
					t.Fatalf("Load of a missing snapshot: got %v, want ErrNotFound", err)
				}
				var nf *snapshot.NotFoundError
				if !errors.As(err, &nf) || nf.StreamID != "missing" {
					t.Fatalf("Load of a missing snapshot: got %#v, want *NotFoundError naming the stream", err)
				}
				if err := s.Delete(t.Context(), "missing"); err != nil {
					t.Fatalf("Delete of a missing snapshot: %v", err)
				}
			})
			t.Run("SaveLoadKeepsNewest", func(t *testing.T) {
				ctx := t.Context()
				s := newStore(t)
				at := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
				save := func(v int64, schema int, state string) {
					t.Helper()
					if err := s.Save(ctx, snapshot.Snapshot{StreamID: "acc-1", Version: v, SchemaVersion: schema, State: []byte(state), TakenAt: at}); err != nil {
						t.Fatalf("Save v%d: %v", v, err)
					}
				}
				want := func(v int64, schema int, state string) {
					t.Helper()
					got, err := s.Load(ctx, "acc-1")
					if err != nil {
						t.Fatalf("Load: %v", err)
					}
					if got.StreamID != "acc-1" || got.Version != v || got.SchemaVersion != schema || !bytes.Equal(got.State, []byte(state)) || !got.TakenAt.Equal(at) {
						t.Fatalf("Load = %+v, want version %d, schema %d, state %q, taken at %v", got, v, schema, state, at)
					}
				}
				save(10, 1, `{"n":10}`)
				want(10, 1, `{"n":10}`)
				save(20, 1, `{"n":20}`)
				want(20, 1, `{"n":20}`)
				save(15, 1, `{"n":15}`) // older: ignored
				want(20, 1, `{"n":20}`)
				save(20, 2, `{"n":"twenty"}`) // same version: replaces (new schema)
				want(20, 2, `{"n":"twenty"}`)

				// Streams are independent.
				if err := s.Save(ctx, snapshot.Snapshot{StreamID: "acc-2", Version: 1, SchemaVersion: 1, State: []byte(`{}`)}); err != nil {
					t.Fatalf("Save acc-2: %v", err)
				}
				got, err := s.Load(ctx, "acc-2")
				if err != nil || got.Version != 1 || got.TakenAt.IsZero() {
					t.Fatalf("Load acc-2 = %+v, %v; want version 1 with TakenAt set by the store", got, err)
				}
				want(20, 2, `{"n":"twenty"}`)

				if err := s.Delete(ctx, "acc-1"); err != nil {
					t.Fatalf("Delete: %v", err)
				}
				if _, err := s.Load(ctx, "acc-1"); !errors.Is(err, snapshot.ErrNotFound) {
					t.Fatalf("Load after Delete: got %v, want ErrNotFound", err)
				}
				// After a delete, any version may be saved again.
				save(3, 1, `{"n":3}`)
				want(3, 1, `{"n":3}`)
			})
			t.Run("LoadedStateIsACopy", func(t *testing.T) {
				ctx := t.Context()
				s := newStore(t)
				state := []byte("abc")
				if err := s.Save(ctx, snapshot.Snapshot{StreamID: "s", Version: 1, State: state}); err != nil {
					t.Fatal(err)
				}
				state[0] = 'X'
				got, err := s.Load(ctx, "s")
				if err != nil {
					t.Fatal(err)
				}
				if string(got.State) != "abc" {
					t.Fatalf("stored state changed with the caller's slice: %q", got.State)
				}
				got.State[0] = 'Y'
				again, _ := s.Load(ctx, "s")
				if string(again.State) != "abc" {
					t.Fatalf("stored state changed with a loaded slice: %q", again.State)
				}
			})
			t.Run("InvalidSnapshot", func(t *testing.T) {
				s := newStore(t)
				for _, bad := range []snapshot.Snapshot{
					{Version: 1, State: []byte("x")},
					{StreamID: "s", Version: 0, State: []byte("x")},
					{StreamID: "s", Version: 1},
				} {
					if err := s.Save(t.Context(), bad); err == nil {
						t.Errorf("Save(%+v) succeeded, want an error", bad)
					}
				}
			})
			t.Run("ConcurrentSavesKeepHighest", func(t *testing.T) {
				ctx := t.Context()
				s := newStore(t)
				var wg sync.WaitGroup
				for v := int64(1); v <= 40; v++ {
					wg.Go(func() {
						if err := s.Save(ctx, snapshot.Snapshot{StreamID: "c", Version: v, SchemaVersion: 1, State: []byte{byte(v)}}); err != nil {
							t.Errorf("Save v%d: %v", v, err)
						}
					})
				}
				wg.Wait()
				got, err := s.Load(ctx, "c")
				if err != nil {
					t.Fatal(err)
				}
				if got.Version != 40 || !bytes.Equal(got.State, []byte{40}) {
					t.Fatalf("after concurrent saves: version %d state %v, want 40 [40]", got.Version, got.State)
				}
			})
		})
	}
}

func TestPolicies(t *testing.T) {
	every := snapshot.EveryN(100)
	cases := []struct {
		p    snapshot.Point
		want bool
	}{
		{snapshot.Point{PrevVersion: 0, Version: 1}, false},
		{snapshot.Point{PrevVersion: 98, Version: 99, SnapshotVersion: 0}, false},
		{snapshot.Point{PrevVersion: 99, Version: 100}, true},
		{snapshot.Point{PrevVersion: 95, Version: 105}, true}, // jumps over a multiple
		{snapshot.Point{PrevVersion: 100, Version: 101, SnapshotVersion: 100}, false},
		{snapshot.Point{PrevVersion: 250, Version: 251, SnapshotVersion: 50}, true}, // long tail: snapshots were lost
		{snapshot.Point{PrevVersion: 250, Version: 251, SnapshotVersion: 200}, false},
		{snapshot.Point{PrevVersion: 199, Version: 199, SnapshotVersion: 0}, false}, // the snapshot at 100 may still be in flight
	}
	for _, c := range cases {
		if got := every.ShouldSnapshot(c.p); got != c.want {
			t.Errorf("EveryN(100).ShouldSnapshot(%+v) = %v, want %v", c.p, got, c.want)
		}
	}
	if !snapshot.EveryN(0).ShouldSnapshot(snapshot.Point{PrevVersion: 3, Version: 4, SnapshotVersion: 3}) {
		t.Error("EveryN(0) behaves as EveryN(1): every append snapshots")
	}
	pred := snapshot.Predicate(func(p snapshot.Point) bool { return p.StreamID == "hot" })
	if !pred.ShouldSnapshot(snapshot.Point{StreamID: "hot"}) || pred.ShouldSnapshot(snapshot.Point{StreamID: "cold"}) {
		t.Error("Predicate does not follow its function")
	}
	if snapshot.Never().ShouldSnapshot(snapshot.Point{PrevVersion: 99, Version: 100}) {
		t.Error("Never snapshots")
	}
}

func TestJSONCodec(t *testing.T) {
	type state struct {
		Balance int64
		Owners  []string
	}
	var c snapshot.StateCodec = snapshot.JSON{}
	b, err := c.Marshal(state{Balance: 7, Owners: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	var got state
	if err := c.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Balance != 7 || len(got.Owners) != 1 || got.Owners[0] != "a" {
		t.Fatalf("round trip = %+v", got)
	}
}
