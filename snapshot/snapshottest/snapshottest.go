// Package snapshottest is the conformance suite of snapshot.Store: a store
// implementation's tests call Run with a constructor of empty stores.
package snapshottest

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/eskit/eskit/snapshot"
)

// Run checks the Store contract on the stores newStore returns (a fresh,
// empty one per call): missing snapshots, keeping the newest of concurrent
// saves, deletes and the refusal of invalid snapshots.
func Run(t *testing.T, newStore func(t *testing.T) snapshot.Store) {
	t.Helper()
	{
		{
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
		}
	}
}
