// Package aggtest tests deciders: given/when/then scenarios, and property
// checks (on pgregory.net/rapid) that random command sequences keep the
// domain's invariants, that replaying the events reproduces the state, and
// that a state restored from a snapshot plus the later events equals the
// state of a full replay.
//
// A scenario:
//
//	var decider aggregate.Decider[State, Command, Event] = Decider{}
//
//	aggtest.For(t, decider).
//		Given(Opened{Owner: "ann"}, Deposited{Amount: 5}).
//		When(Withdraw{Amount: 10}).
//		ThenError(ErrInsufficientFunds)
//
// Given(t, decider, events...) is the same in one call when the events'
// static type is the decider's event type; when the events are of concrete
// types implementing an interface E, Go cannot infer E from them, so use
// For (or name the type arguments).
//
// A property check:
//
//	func TestAccountProperties(t *testing.T) {
//		aggtest.Check(t, aggtest.Spec[State, Command, Event]{
//			Decider:    Decider{},
//			Commands:   commands, // a *rapid.Generator[Command], valid and invalid ones
//			Invariants: []func(State) error{noOverdraft},
//		})
//	}
//
// Each check tries DefaultChecks (1,000) random sequences of up to
// DefaultMaxCommands (50) commands, most of them 10 commands or longer, so
// that bugs needing several commands in a particular order show. Spec.Checks
// and Spec.MaxCommands change them; -rapid.checks=N on the command line
// makes it N sequences per check, -short a fifth.
//
// A check given a *rapid.T, inside a rapid property, verifies one sequence
// drawn from that T, and the outer rapid.Check repeats, shrinks and saves
// the failing cases; the spec may then depend on other drawn values.
//
// A failure is shrunk to a short sequence and reported once: the commands,
// each with its events or rejection, the state and the broken rule. rapid
// saves the failing case under testdata/rapid/<TestName>/ and replays the
// files there first on every later run of the test; -rapid.failfile=<file>
// reruns one. Delete them once the bug is fixed (keep the sequence as a
// scenario instead): they are tied to the rapid version and the generators.
package aggtest

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/eskit/eskit/aggregate"
)

// TB is the part of testing.TB (and rapid's *T) that scenarios use.
type TB interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// Scenario is a given/when/then test of a decider. Build one with Given.
type Scenario[S, C, E any] struct {
	t      TB
	d      aggregate.Decider[S, C, E]
	given  []E
	state  S // after the given events
	when   bool
	cmd    C
	events []E
	err    error
}

// Fixture is a decider under test; its Given starts scenarios.
type Fixture[S, C, E any] struct {
	t TB
	d aggregate.Decider[S, C, E]
}

// For returns a fixture for scenarios on d.
func For[S, C, E any](t TB, d aggregate.Decider[S, C, E]) *Fixture[S, C, E] {
	return &Fixture[S, C, E]{t: t, d: d}
}

// Given starts a scenario: the decider's state after events.
func (f *Fixture[S, C, E]) Given(events ...E) *Scenario[S, C, E] {
	f.t.Helper()
	return Given(f.t, f.d, events...)
}

// Given starts a scenario: the decider's state after events.
func Given[S, C, E any](t TB, d aggregate.Decider[S, C, E], events ...E) *Scenario[S, C, E] {
	t.Helper()
	return &Scenario[S, C, E]{t: t, d: d, given: events, state: aggregate.Fold(d, d.Initial(), events...)}
}

// When decides cmd on the given state.
func (s *Scenario[S, C, E]) When(cmd C) *Scenario[S, C, E] {
	s.t.Helper()
	if s.when {
		s.t.Fatalf("aggtest: When called twice in one scenario")
		return s
	}
	s.when, s.cmd = true, cmd
	s.events, s.err = s.d.Decide(s.state, cmd)
	return s
}

// Then expects the command to be accepted with exactly the given events
// (compared with reflect.DeepEqual); no events means the command changes
// nothing.
func (s *Scenario[S, C, E]) Then(events ...E) *Scenario[S, C, E] {
	s.t.Helper()
	if !s.requireWhen("Then") {
		return s
	}
	if s.err != nil {
		s.t.Errorf("%s\nwant events:\n%s\ngot the rejection: %v", s.describe(), listEvents(events), s.err)
		return s
	}
	if !equalEvents(events, s.events) {
		s.t.Errorf("%s\nevents differ (- want, + got):\n%s", s.describe(), diffEvents(events, s.events))
	}
	return s
}

// ThenError expects the command to be rejected with an error matching
// target (errors.Is), and no events.
func (s *Scenario[S, C, E]) ThenError(target error) *Scenario[S, C, E] {
	s.t.Helper()
	if !s.requireWhen("ThenError") {
		return s
	}
	switch {
	case s.err == nil:
		s.t.Errorf("%s\nwant the rejection %v\ngot events:\n%s", s.describe(), target, listEvents(s.events))
	case !errors.Is(s.err, target):
		s.t.Errorf("%s\nwant an error matching %v\ngot %v (%T)", s.describe(), target, s.err, s.err)
	case len(s.events) > 0:
		s.t.Errorf("%s\nrejected with %v but also returned events:\n%s", s.describe(), s.err, listEvents(s.events))
	}
	return s
}

// ThenErrorAs expects the command to be rejected with an error that
// errors.As assigns to target (a non-nil pointer to an error type).
func (s *Scenario[S, C, E]) ThenErrorAs(target any) *Scenario[S, C, E] {
	s.t.Helper()
	if !s.requireWhen("ThenErrorAs") {
		return s
	}
	if s.err == nil {
		s.t.Errorf("%s\nwant a rejection of type %T\ngot events:\n%s", s.describe(), target, listEvents(s.events))
		return s
	}
	if target == nil || reflect.TypeOf(target).Kind() != reflect.Pointer {
		s.t.Fatalf("aggtest: ThenErrorAs needs a non-nil pointer, got %T", target)
		return s
	}
	if !errors.As(s.err, target) {
		s.t.Errorf("%s\nwant an error assignable to %s\ngot %v (%T)", s.describe(), reflect.TypeOf(target).Elem(), s.err, s.err)
	}
	return s
}

// ThenState calls check with the state after the given events and, when
// the command was accepted, its events. Without When it is the given state.
func (s *Scenario[S, C, E]) ThenState(check func(S)) *Scenario[S, C, E] {
	s.t.Helper()
	if s.when && s.err != nil {
		s.t.Errorf("%s\nwant a state, got the rejection: %v", s.describe(), s.err)
		return s
	}
	check(s.State())
	return s
}

// State returns the state after the given events and the command's events.
func (s *Scenario[S, C, E]) State() S {
	return aggregate.Fold(s.d, aggregate.Fold(s.d, s.d.Initial(), s.given...), s.events...)
}

// Events returns the events the command caused.
func (s *Scenario[S, C, E]) Events() []E { return s.events }

// Err returns the command's rejection, if any.
func (s *Scenario[S, C, E]) Err() error { return s.err }

func (s *Scenario[S, C, E]) requireWhen(what string) bool {
	s.t.Helper()
	if !s.when {
		s.t.Fatalf("aggtest: %s before When", what)
		return false
	}
	return true
}

func (s *Scenario[S, C, E]) describe() string {
	var b strings.Builder
	if len(s.given) == 0 {
		b.WriteString("given no events")
	} else {
		fmt.Fprintf(&b, "given %d event(s):\n%s", len(s.given), listEvents(s.given))
	}
	fmt.Fprintf(&b, "\nwhen %#v", s.cmd)
	return b.String()
}

func equalEvents[E any](want, got []E) bool {
	if len(want) != len(got) {
		return false
	}
	for i := range want {
		if !reflect.DeepEqual(want[i], got[i]) {
			return false
		}
	}
	return true
}

func listEvents[E any](events []E) string {
	if len(events) == 0 {
		return "    (none)"
	}
	lines := make([]string, len(events))
	for i, e := range events {
		lines[i] = fmt.Sprintf("    [%d] %#v", i, e)
	}
	return strings.Join(lines, "\n")
}

// diffEvents lists both slices index by index, marking differences.
func diffEvents[E any](want, got []E) string {
	var b strings.Builder
	for i := range max(len(want), len(got)) {
		var w, g string
		if i < len(want) {
			w = fmt.Sprintf("%#v", want[i])
		}
		if i < len(got) {
			g = fmt.Sprintf("%#v", got[i])
		}
		switch {
		case i < len(want) && i < len(got) && reflect.DeepEqual(want[i], got[i]):
			fmt.Fprintf(&b, "    [%d]   %s\n", i, w)
		default:
			if i < len(want) {
				fmt.Fprintf(&b, "    [%d] - %s\n", i, w)
			}
			if i < len(got) {
				fmt.Fprintf(&b, "    [%d] + %s\n", i, g)
			}
		}
	}
	if len(want) == 0 && len(got) == 0 {
		b.WriteString("    (none)\n")
	}
	return strings.TrimSuffix(b.String(), "\n")
}
