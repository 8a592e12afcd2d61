package eventstore_test

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"math"
	"math/rand/v2"

	"github.com/eskit/eskit/eventstore"
)

func TestPositionOrder(t *testing.T) {
	ordered := []eventstore.Position{
		{},
		{Tx: 0, Seq: 1},
		{Tx: 1, Seq: 0},
		{Tx: 1, Seq: 7},
		{Tx: 2, Seq: 3},
		{Tx: 2, Seq: 1 << 63},
		{Tx: 1 << 63, Seq: 0},
		{Tx: ^uint64(0), Seq: ^uint64(0)},
	}
	for i, p := range ordered {
		for j, q := range ordered {
			want := 0
			switch {
			case i < j:
				want = -1
			case i > j:
				want = 1
			}
			if got := p.Compare(q); got != want {
				t.Errorf("%s.Compare(%s) = %d, want %d", p, q, got, want)
			}
			if p.Before(q) != (i < j) || p.After(q) != (i > j) {
				t.Errorf("%s vs %s: Before %v, After %v", p, q, p.Before(q), p.After(q))
			}
		}
	}
	if !ordered[0].IsZero() || ordered[1].IsZero() {
		t.Error("IsZero is wrong")
	}
}

func TestPositionString(t *testing.T) {
	for p, want := range map[eventstore.Position]string{
		{}:                                "0-0",
		{Tx: 12, Seq: 345}:                "12-345",
		{Tx: ^uint64(0), Seq: ^uint64(0)}: "18446744073709551615-18446744073709551615",
	} {
		if got := p.String(); got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
		back, err := eventstore.ParsePosition(want)
		if err != nil || back != p {
			t.Errorf("ParsePosition(%q) = %v, %v; want %v", want, back, err, p)
		}
	}
	if p, err := eventstore.ParsePosition(""); err != nil || !p.IsZero() {
		t.Errorf("ParsePosition(\"\") = %v, %v; want the zero Position", p, err)
	}
}

func TestParsePositionRejects(t *testing.T) {
	for _, s := range []string{
		"1", "-", "1-", "-1", "a-1", "1-b", "1-2-3", "-1-2", "1--2", " 1-2", "1-2 ", "+1-2",
		"18446744073709551616-0", "0-18446744073709551616", "1.0-2", "0x1-2",
	} {
		p, err := eventstore.ParsePosition(s)
		if !errors.Is(err, eventstore.ErrInvalidArgument) {
			t.Errorf("ParsePosition(%q) = %v, %v; want ErrInvalidArgument", s, p, err)
		}
	}
	var p eventstore.Position
	if err := p.UnmarshalText([]byte("x")); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Errorf("UnmarshalText: %v", err)
	}
}

func TestPositionJSON(t *testing.T) {
	in := struct {
		At eventstore.Position `json:"at"`
	}{eventstore.Position{Tx: 9, Seq: 10}}
	b, err := json.Marshal(in)
	if err != nil || string(b) != `{"at":"9-10"}` {
		t.Fatalf("Marshal = %s, %v", b, err)
	}
	out := in
	out.At = eventstore.Position{}
	if err := json.Unmarshal(b, &out); err != nil || out != in {
		t.Fatalf("Unmarshal = %+v, %v", out, err)
	}
	if err := json.Unmarshal([]byte(`{"at":"nope"}`), &out); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Fatalf("Unmarshal of a bad position: %v", err)
	}
}

// genPosition draws a position, often an edge value (0, 1, the largest),
// so that equal and neighbouring positions come up.
func genPosition(r *rand.Rand) eventstore.Position {
	draw := func() uint64 {
		switch r.IntN(4) {
		case 0:
			return uint64(r.IntN(3))
		case 1:
			return math.MaxUint64 - uint64(r.IntN(2))
		}
		return r.Uint64()
	}
	return eventstore.Position{Tx: draw(), Seq: draw()}
}

// rounds of the randomised position properties.
const rounds = 2000

func TestPositionProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range rounds {
		p, q := genPosition(r), genPosition(r)
		back, err := eventstore.ParsePosition(p.String())
		if err != nil || back != p {
			t.Fatalf("ParsePosition(%q) = %v, %v", p.String(), back, err)
		}
		text, _ := p.MarshalText()
		var u eventstore.Position
		if err := u.UnmarshalText(text); err != nil || u != p {
			t.Fatalf("text round trip of %v: %v, %v", p, u, err)
		}
		if p.Compare(q) != -q.Compare(p) {
			t.Fatalf("Compare is not antisymmetric for %v, %v", p, q)
		}
		if (p.Compare(q) == 0) != (p == q) {
			t.Fatalf("Compare(%v, %v) = 0 disagrees with ==", p, q)
		}
		// The order is lexicographic on (Tx, Seq).
		want := p.Tx < q.Tx || (p.Tx == q.Tx && p.Seq < q.Seq)
		if p.Before(q) != want {
			t.Fatalf("%v.Before(%v) = %v", p, q, p.Before(q))
		}
	}
}

func TestPositionSortTransitive(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range rounds / 10 {
		ps := make([]eventstore.Position, r.IntN(21))
		for i := range ps {
			ps[i] = genPosition(r)
		}
		slices.SortFunc(ps, eventstore.Position.Compare)
		for i := 1; i < len(ps); i++ {
			if ps[i].Before(ps[i-1]) {
				t.Fatalf("sorted positions out of order at %d: %v", i, ps)
			}
		}
		for i := range ps {
			for j := i + 1; j < len(ps); j++ {
				if ps[j].Before(ps[i]) {
					t.Fatalf("order is not transitive: %v before %v", ps[j], ps[i])
				}
			}
		}
	}
}

func TestEventsBetween(t *testing.T) {
	p := func(tx, seq uint64) eventstore.Position { return eventstore.Position{Tx: tx, Seq: seq} }
	for _, tc := range []struct {
		from, to eventstore.Position
		want     int64
	}{
		{p(0, 0), p(0, 0), 0},
		{p(5, 10), p(5, 10), 0},
		{p(5, 10), p(4, 9), 0},
		{p(0, 0), p(7, 12), 12},
		{p(5, 10), p(9, 15), 5},
		{p(5, 10), p(6, 10), 1}, // a later transaction, no later sequence number
		{p(0, 0), p(1, ^uint64(0)), math.MaxInt64},
	} {
		if got := eventstore.EventsBetween(tc.from, tc.to); got != tc.want {
			t.Errorf("EventsBetween(%s, %s) = %d, want %d", tc.from, tc.to, got, tc.want)
		}
	}
}
