package snapshot_test

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/eskit/eskit/snapshot"
)

// EveryN snapshots whenever an append crosses a multiple of n, even an
// append of several events that jumps over it.
func ExampleEveryN() {
	p := snapshot.EveryN(100)
	fmt.Println(p.ShouldSnapshot(snapshot.Point{StreamID: "account-1", PrevVersion: 98, Version: 99}))
	fmt.Println(p.ShouldSnapshot(snapshot.Point{StreamID: "account-1", PrevVersion: 99, Version: 100}))
	fmt.Println(p.ShouldSnapshot(snapshot.Point{StreamID: "account-1", PrevVersion: 195, Version: 203}))
	// Output:
	// false
	// true
	// true
}

// Predicate decides with a function of its own: here, only for streams of
// one kind and every tenth version.
func ExamplePredicate() {
	p := snapshot.Predicate(func(pt snapshot.Point) bool {
		return strings.HasPrefix(pt.StreamID, "account-") && pt.Version%10 == 0
	})
	fmt.Println(p.ShouldSnapshot(snapshot.Point{StreamID: "account-1", PrevVersion: 9, Version: 10}))
	fmt.Println(p.ShouldSnapshot(snapshot.Point{StreamID: "transfer-1", PrevVersion: 9, Version: 10}))
	// Output:
	// true
	// false
}

// A snapshot store keeps the newest snapshot of each stream; an older one
// never replaces it. Repositories use it through aggregate.WithSnapshots.
func ExampleMemory() {
	ctx := context.Background()
	store := snapshot.NewMemory()

	_ = store.Save(ctx, snapshot.Snapshot{StreamID: "account-1", Version: 20, SchemaVersion: 1, State: []byte(`{"Balance":200}`)})
	_ = store.Save(ctx, snapshot.Snapshot{StreamID: "account-1", Version: 10, SchemaVersion: 1, State: []byte(`{"Balance":100}`)})
	s, err := store.Load(ctx, "account-1")
	fmt.Println(s.Version, string(s.State), err)

	_, err = store.Load(ctx, "account-2")
	fmt.Println(errors.Is(err, snapshot.ErrNotFound))
	// Output:
	// 20 {"Balance":200} <nil>
	// true
}
