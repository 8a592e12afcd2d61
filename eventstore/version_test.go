package eventstore_test

import (
	"strconv"
	"testing"

	"github.com/eskit/eskit/eventstore"
)

func TestExpectedVersionCheck(t *testing.T) {
	for _, tc := range []struct {
		e       eventstore.ExpectedVersion
		current int64
		want    bool
	}{
		{eventstore.Any, 0, true},
		{eventstore.Any, 5, true},
		{eventstore.NoStream, 0, true},
		{eventstore.NoStream, 1, false},
		{eventstore.StreamExists, 0, false},
		{eventstore.StreamExists, 1, true},
		{eventstore.StreamExists, 99, true},
		{eventstore.Exact(0), 0, true},
		{eventstore.Exact(0), 3, false},
		{eventstore.Exact(3), 3, true},
		{eventstore.Exact(3), 2, false},
		{eventstore.Exact(3), 4, false},
	} {
		if got := tc.e.Check(tc.current); got != tc.want {
			t.Errorf("%s.Check(%d) = %v, want %v", tc.e, tc.current, got, tc.want)
		}
	}
	if eventstore.Exact(0) != eventstore.NoStream {
		t.Error("Exact(0) is not NoStream")
	}
}

func TestExpectedVersionValidAndString(t *testing.T) {
	for e, want := range map[eventstore.ExpectedVersion]string{
		eventstore.Any:          "any",
		eventstore.StreamExists: "stream-exists",
		eventstore.NoStream:     "no-stream",
		eventstore.Exact(42):    "42",
	} {
		if !e.Valid() || e.String() != want {
			t.Errorf("%d: Valid %v, String %q; want valid %q", int64(e), e.Valid(), e.String(), want)
		}
	}
	for _, e := range []eventstore.ExpectedVersion{-3, -100} {
		if e.Valid() {
			t.Errorf("%d is valid", int64(e))
		}
		if e.String() != "invalid("+strconv.FormatInt(int64(e), 10)+")" {
			t.Errorf("String() = %q", e.String())
		}
	}
}
