package aggtest

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"pgregory.net/rapid"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/snapshot"
)

// DefaultMaxCommands is the longest command sequence the checks draw.
const DefaultMaxCommands = 50

// Spec describes a decider for the property checks.
type Spec[S, C, E any] struct {
	// Decider is the decider under test.
	Decider aggregate.Decider[S, C, E]
	// Commands generates commands, valid and invalid ones alike.
	Commands *rapid.Generator[C]
	// Invariants must hold in every state; each returns an error saying
	// what is wrong.
	Invariants []func(S) error
	// MaxCommands bounds the length of a drawn sequence
	// (DefaultMaxCommands when 0).
	MaxCommands int
	// Codec encodes states for snapshots (snapshot.JSON when nil). The
	// checks also use it to notice a Decide or Evolve that changes the
	// state it was given.
	Codec snapshot.StateCodec
	// Equal compares states (reflect.DeepEqual when nil).
	Equal func(a, b S) bool
}

func (s Spec[S, C, E]) codec() snapshot.StateCodec {
	if s.Codec == nil {
		return snapshot.JSON{}
	}
	return s.Codec
}

func (s Spec[S, C, E]) equal(a, b S) bool {
	if s.Equal == nil {
		return reflect.DeepEqual(a, b)
	}
	return s.Equal(a, b)
}

func (s Spec[S, C, E]) draw(t *rapid.T) []C {
	if s.Commands == nil {
		t.Fatalf("aggtest: Spec.Commands is nil")
	}
	n := s.MaxCommands
	if n <= 0 {
		n = DefaultMaxCommands
	}
	return rapid.SliceOfN(s.Commands, 0, n).Draw(t, "commands")
}

func (s Spec[S, C, E]) check(t rapid.TB, verify func([]C) error) {
	t.Helper()
	if s.Decider == nil {
		t.Fatalf("aggtest: Spec.Decider is nil")
		return
	}
	rapid.Check(t, func(rt *rapid.T) {
		if err := verify(s.draw(rt)); err != nil {
			rt.Fatalf("%v", err)
		}
	})
}

// CheckInvariants checks, on random command sequences, that every state
// reached keeps the invariants, that a rejected command returns no events
// and leaves the state unchanged, and that neither Decide nor Evolve
// changes the state it is given.
func CheckInvariants[S, C, E any](t rapid.TB, spec Spec[S, C, E]) {
	t.Helper()
	spec.check(t, spec.VerifyInvariants)
}

// CheckReplay checks, on random command sequences, that Decide is
// deterministic and that folding all the events produced from the initial
// state reproduces the state reached step by step.
func CheckReplay[S, C, E any](t rapid.TB, spec Spec[S, C, E]) {
	t.Helper()
	spec.check(t, spec.VerifyReplay)
}

// CheckSnapshots checks, on random command sequences, that the state after
// any prefix of the events, encoded with the codec and decoded again,
// equals that state, and that it plus the remaining events equals the
// state of a full replay.
func CheckSnapshots[S, C, E any](t rapid.TB, spec Spec[S, C, E]) {
	t.Helper()
	spec.check(t, spec.VerifySnapshots)
}

// Check runs CheckInvariants, CheckReplay and CheckSnapshots.
func Check[S, C, E any](t rapid.TB, spec Spec[S, C, E]) {
	t.Helper()
	spec.check(t, spec.Verify)
}

// Verify checks all three properties on one command sequence.
func (s Spec[S, C, E]) Verify(cmds []C) error {
	return errors.Join(s.VerifyInvariants(cmds), s.VerifyReplay(cmds), s.VerifySnapshots(cmds))
}

// step is one handled command of a run.
type step[C, E any] struct {
	cmd    C
	events []E
	err    error
}

// trace formats the steps up to and including the last one.
func trace[C, E any](steps []step[C, E]) string {
	var b strings.Builder
	for i, st := range steps {
		fmt.Fprintf(&b, "\n  %d. %#v", i+1, st.cmd)
		if st.err != nil {
			fmt.Fprintf(&b, " -> rejected: %v", st.err)
		} else {
			fmt.Fprintf(&b, " -> %d event(s)", len(st.events))
			for _, e := range st.events {
				fmt.Fprintf(&b, "\n       %#v", e)
			}
		}
	}
	return b.String()
}

// VerifyInvariants checks the invariants property (see CheckInvariants) on
// one command sequence.
func (s Spec[S, C, E]) VerifyInvariants(cmds []C) error {
	d := s.Decider
	state := d.Initial()
	if err := s.invariants(state); err != nil {
		return fmt.Errorf("initial state %#v breaks an invariant: %w", state, err)
	}
	var steps []step[C, E]
	for _, cmd := range cmds {
		before, encErr := s.codec().Marshal(state)
		events, err := d.Decide(state, cmd)
		steps = append(steps, step[C, E]{cmd, events, err})
		if encErr == nil {
			if after, err := s.codec().Marshal(state); err != nil || !bytes.Equal(before, after) {
				return fmt.Errorf("aggtest: Decide changed the state it was given (%s became %s) after:%s", before, after, trace(steps))
			}
		}
		if err != nil {
			if len(events) > 0 {
				return fmt.Errorf("a rejected command returned %d event(s) after:%s", len(events), trace(steps))
			}
			continue
		}
		for _, e := range events {
			prev, encErr := s.codec().Marshal(state)
			next := d.Evolve(state, e)
			if encErr == nil {
				if again, err := s.codec().Marshal(state); err != nil || !bytes.Equal(prev, again) {
					return fmt.Errorf("aggtest: Evolve changed the state it was given (%s became %s) on %#v after:%s", prev, again, e, trace(steps))
				}
			}
			state = next
		}
		if err := s.invariants(state); err != nil {
			return fmt.Errorf("state %#v breaks an invariant: %w\nafter:%s", state, err, trace(steps))
		}
	}
	return nil
}

func (s Spec[S, C, E]) invariants(state S) error {
	var errs []error
	for _, inv := range s.Invariants {
		if err := inv(state); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// run handles cmds from the initial state and returns the steps, every
// event in order, and the final state.
func (s Spec[S, C, E]) run(cmds []C) ([]step[C, E], []E, S) {
	d := s.Decider
	state := d.Initial()
	var steps []step[C, E]
	var all []E
	for _, cmd := range cmds {
		events, err := d.Decide(state, cmd)
		steps = append(steps, step[C, E]{cmd, events, err})
		if err != nil {
			continue
		}
		all = append(all, events...)
		state = aggregate.Fold(d, state, events...)
	}
	return steps, all, state
}

// VerifyReplay checks the replay property (see CheckReplay) on one command
// sequence.
func (s Spec[S, C, E]) VerifyReplay(cmds []C) error {
	d := s.Decider
	steps, all, state := s.run(cmds)
	// Decide again on freshly replayed states: same answers.
	replayed := d.Initial()
	for i, st := range steps {
		events, err := d.Decide(replayed, st.cmd)
		if !reflect.DeepEqual(events, st.events) || (err == nil) != (st.err == nil) || (err != nil && err.Error() != st.err.Error()) {
			return fmt.Errorf("aggtest: Decide is not deterministic: on the same state it answered %v / %v, then %v / %v\nafter:%s",
				st.events, st.err, events, err, trace(steps[:i+1]))
		}
		if err == nil {
			replayed = aggregate.Fold(d, replayed, events...)
		}
	}
	full := aggregate.Fold(d, d.Initial(), all...)
	if !s.equal(full, state) {
		return fmt.Errorf("replaying the %d events gives %#v, but handling the commands gave %#v\nafter:%s", len(all), full, state, trace(steps))
	}
	return nil
}

// VerifySnapshots checks the snapshot property (see CheckSnapshots) on one
// command sequence.
func (s Spec[S, C, E]) VerifySnapshots(cmds []C) error {
	d := s.Decider
	steps, all, _ := s.run(cmds)
	full := aggregate.Fold(d, d.Initial(), all...)
	for cut := 0; cut <= len(all); cut++ {
		at := aggregate.Fold(d, d.Initial(), all[:cut]...)
		data, err := s.codec().Marshal(at)
		if err != nil {
			return fmt.Errorf("cannot encode the state after %d event(s) %#v: %w\nafter:%s", cut, at, err, trace(steps))
		}
		var restored S
		if err := s.codec().Unmarshal(data, &restored); err != nil {
			return fmt.Errorf("cannot decode the snapshot after %d event(s) %s: %w\nafter:%s", cut, data, err, trace(steps))
		}
		if !s.equal(restored, at) {
			return fmt.Errorf("the snapshot after %d event(s) restores %#v, want %#v (encoded %s)\nafter:%s", cut, restored, at, data, trace(steps))
		}
		if got := aggregate.Fold(d, restored, all[cut:]...); !s.equal(got, full) {
			return fmt.Errorf("the snapshot after %d event(s) plus the other %d give %#v, but a full replay gives %#v\nafter:%s",
				cut, len(all)-cut, got, full, trace(steps))
		}
	}
	return nil
}
