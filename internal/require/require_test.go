package require

import (
	"errors"
	"fmt"
	"io"
	"testing"
	"time"
)

type fakeTB struct{ failed []string }

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = append(f.failed, fmt.Sprintf(format, args...))
}

// Each assertion passes on what it accepts and fails on the rest.
func TestAssertions(t *testing.T) {
	type named int
	x := 5
	wrapped := fmt.Errorf("w: %w", io.EOF)
	for name, tc := range map[string]struct {
		pass, fail func(TB)
	}{
		"Equal":          {func(t TB) { Equal(t, []byte("a"), []byte("a")) }, func(t TB) { Equal(t, 1, int64(1)) }},
		"EqualValues":    {func(t TB) { EqualValues(t, int64(1), 1) }, func(t TB) { EqualValues(t, 2, 1) }},
		"NoError":        {func(t TB) { NoError(t, nil) }, func(t TB) { NoError(t, io.EOF) }},
		"ErrorIs":        {func(t TB) { ErrorIs(t, wrapped, io.EOF) }, func(t TB) { ErrorIs(t, wrapped, io.ErrUnexpectedEOF) }},
		"ErrorAs":        {func(t TB) { var n *fakeErr; ErrorAs(t, fmt.Errorf("x: %w", &fakeErr{}), &n) }, func(t TB) { var n *fakeErr; ErrorAs(t, io.EOF, &n) }},
		"Nil":            {func(t TB) { var p *int; Nil(t, p) }, func(t TB) { Nil(t, &x) }},
		"Empty":          {func(t TB) { Empty(t, []int{}); Empty(t, ""); Empty(t, named(0)) }, func(t TB) { Empty(t, "a") }},
		"Len":            {func(t TB) { Len(t, map[int]int{1: 1}, 1) }, func(t TB) { Len(t, "ab", 1) }},
		"Contains":       {func(t TB) { Contains(t, "abc", "b"); Contains(t, []int{1, 2}, 2) }, func(t TB) { Contains(t, []int{1}, 2) }},
		"Greater":        {func(t TB) { Greater(t, 2, 1); Greater(t, "b", "a") }, func(t TB) { Greater(t, 1, 1) }},
		"LessOrEqual":    {func(t TB) { LessOrEqual(t, 1, 1) }, func(t TB) { LessOrEqual(t, 2.0, 1.0) }},
		"ElementsMatch":  {func(t TB) { ElementsMatch(t, []int{1, 2, 2}, []int{2, 1, 2}) }, func(t TB) { ElementsMatch(t, []int{1, 1}, []int{1, 2}) }},
		"Eventually":     {func(t TB) { Eventually(t, func() bool { return true }, time.Second, time.Millisecond) }, func(t TB) { Eventually(t, func() bool { return false }, 5*time.Millisecond, time.Millisecond) }},
		"Same":           {func(t TB) { Same(t, &x, &x) }, func(t TB) { y := 5; Same(t, &x, &y) }},
		"ErrorContains":  {func(t TB) { ErrorContains(t, io.EOF, "EOF") }, func(t TB) { ErrorContains(t, nil, "EOF") }},
		"NotErrorIs":     {func(t TB) { NotErrorIs(t, io.EOF, errors.ErrUnsupported) }, func(t TB) { NotErrorIs(t, wrapped, io.EOF) }},
		"True and False": {func(t TB) { True(t, true); False(t, false) }, func(t TB) { Truef(t, false, "n=%d", 1) }},
	} {
		var ok, bad fakeTB
		tc.pass(&ok)
		tc.fail(&bad)
		if len(ok.failed) != 0 {
			t.Errorf("%s failed on what it accepts: %q", name, ok.failed)
		}
		if len(bad.failed) != 1 {
			t.Errorf("%s: %d failures on what it refuses, want 1", name, len(bad.failed))
		}
	}
}

type fakeErr struct{}

func (*fakeErr) Error() string { return "fake" }
