package snapshot_test

import (
	"testing"

	"github.com/eskit/eskit/snapshot"
	"github.com/eskit/eskit/snapshot/snapshottest"
)

// The memory store keeps the Store contract.
func TestMemoryStore(t *testing.T) {
	snapshottest.Run(t, func(*testing.T) snapshot.Store { return snapshot.NewMemory() })
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
		{snapshot.Point{PrevVersion: 98, Version: 100}, true}, // one command, two events: events count
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
