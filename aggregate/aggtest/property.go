package aggtest

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"reflect"
	"strings"

	"pgregory.net/rapid"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/snapshot"
)

// DefaultMaxCommands is the longest command sequence the checks draw.
const DefaultMaxCommands = 50

// DefaultChecks is how many command sequences a check tries when neither
// Spec.Checks nor rapid's -rapid.checks flag says otherwise.
const DefaultChecks = 1000

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
	// (DefaultMaxCommands when 0). With the default, about a quarter of
	// the sequences have fewer than 10 commands, more than half 10 to 49
	// and a fifth all 50; a larger bound draws longer sequences.
	MaxCommands int
	// Checks is how many command sequences each check tries
	// (DefaultChecks when 0), rounded up to a whole number of rapid runs
	// of -rapid.checks (100) sequences each. Giving -rapid.checks (or
	// RAPID_CHECKS) on the command line makes it exactly that many
	// instead, and -short a fifth. Inside a rapid property the outer
	// rapid.Check decides instead.
	Checks int
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

// sequences draws sequences of 1 to maxLen commands as a few chunks of
// commands. A rapid slice is 5 elements long on average whatever its
// bound, so most plain slices would be too short to reach the states
// where the subtle bugs are; chunks keep rapid's shrinking, which drops
// single commands and whole chunks alike.
func sequences[C any](cmds *rapid.Generator[C], maxLen int) *rapid.Generator[[]C] {
	minChunks := (maxLen + DefaultMaxCommands - 1) / DefaultMaxCommands
	chunk := rapid.SliceOfN(cmds, 1, max(1, maxLen/2))
	return rapid.Map(rapid.SliceOfN(chunk, minChunks, 10*minChunks), func(chunks [][]C) []C {
		seq := make([]C, 0, maxLen)
		for _, c := range chunks {
			seq = append(seq, c...)
		}
		return seq[:min(len(seq), maxLen)]
	})
}

// property is one of the three properties the checks verify.
type property int

const (
	invariantsProperty property = iota
	replayProperty
	snapshotsProperty
)

func (p property) String() string {
	switch p {
	case invariantsProperty:
		return "invariants"
	case replayProperty:
		return "replay"
	default:
		return "snapshots"
	}
}

// verify checks property p on cmds; o is the outcome of cmds, computed
// on first use and shared by the properties that need it.
func (s Spec[S, C, E]) verify(p property, cmds []C, o *outcome[S, C, E]) error {
	if p == invariantsProperty {
		return s.VerifyInvariants(cmds)
	}
	if !o.done {
		*o = s.run(cmds)
	}
	if p == replayProperty {
		return s.verifyReplay(*o)
	}
	return s.verifySnapshots(*o)
}

// check verifies the properties on random command sequences. Called with
// a *rapid.T, from inside a rapid property, it checks one sequence drawn
// from that T, so that the outer rapid.Check does the repeating, the
// shrinking and the fail files; otherwise it runs rapid.Check until
// enough sequences are tried.
func (s Spec[S, C, E]) check(t rapid.TB, props ...property) {
	t.Helper()
	switch {
	case s.Decider == nil:
		t.Fatalf("aggtest: Spec.Decider is nil")
		return
	case s.Commands == nil:
		t.Fatalf("aggtest: Spec.Commands is nil")
		return
	}
	maxLen := s.MaxCommands
	if maxLen <= 0 {
		maxLen = DefaultMaxCommands
	}
	gen := sequences(s.Commands, maxLen)
	prop := func(rt *rapid.T) {
		rt.Helper()
		cmds := gen.Draw(rt, "commands")
		var o outcome[S, C, E]
		first := -1
		for i, p := range props {
			if err := s.verify(p, cmds, &o); err != nil {
				// Logged, not given to Fatalf: rapid prints a Fatalf
				// message both in its summary and in the output of the
				// replayed failing case.
				rt.Logf("aggtest: %s: %v", p, err)
				if first < 0 {
					first = i
				}
			}
		}
		if first >= 0 {
			fail(rt, props[first])
		}
	}
	if rt, ok := t.(*rapid.T); ok {
		prop(rt)
		return
	}
	if t.Failed() {
		// rapid.Check refuses a test that has already failed.
		t.Logf("aggtest: the test has already failed; not checking the properties")
		return
	}
	for range s.runs() {
		rapid.Check(t, prop)
		if t.Failed() {
			return
		}
	}
}

// fail ends the failing case at one line per property: rapid's shrinker
// keeps a smaller case only when it fails at the same place, so it does
// not trade, say, a broken invariant for a replay that differs.
func fail(t *rapid.T, p property) {
	t.Helper()
	switch p {
	case invariantsProperty:
		t.FailNow()
	case replayProperty:
		t.FailNow()
	default:
		t.FailNow()
	}
}

// runs returns how many times check runs rapid.Check: once when the
// command line sets the count (-rapid.checks or RAPID_CHECKS) or the seed
// (every run would try the same sequences), otherwise enough runs of
// rapid's count for Spec.Checks.
func (s Spec[S, C, E]) runs() int {
	perRun, set := rapidChecks()
	if set || perRun <= 0 || rapidSeedSet() {
		return 1
	}
	total := s.Checks
	if total <= 0 {
		total = DefaultChecks
	}
	return max(1, (total+perRun-1)/perRun)
}

// rapidChecks returns the number of checks of one rapid run and whether
// the command line or the environment set it.
func rapidChecks() (n int, set bool) {
	const rapidDefault = 100
	f := flag.Lookup("rapid.checks")
	if f == nil {
		return rapidDefault, false
	}
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return rapidDefault, false
	}
	if n, ok = g.Get().(int); !ok {
		return rapidDefault, false
	}
	_, set = os.LookupEnv("RAPID_CHECKS")
	flag.Visit(func(f *flag.Flag) {
		if f.Name == "rapid.checks" {
			set = true
		}
	})
	return n, set
}

// rapidSeedSet reports whether -rapid.seed (or RAPID_SEED) fixes rapid's
// seed.
func rapidSeedSet() bool {
	f := flag.Lookup("rapid.seed")
	return f != nil && f.Value.String() != "0"
}

// CheckInvariants checks, on random command sequences, that every state
// reached keeps the invariants, that a rejected command returns no events
// and leaves the state unchanged, and that neither Decide nor Evolve
// changes the state it is given.
func CheckInvariants[S, C, E any](t rapid.TB, spec Spec[S, C, E]) {
	t.Helper()
	spec.check(t, invariantsProperty)
}

// CheckReplay checks, on random command sequences, that Decide is
// deterministic and that folding all the events produced from the initial
// state reproduces the state reached step by step.
func CheckReplay[S, C, E any](t rapid.TB, spec Spec[S, C, E]) {
	t.Helper()
	spec.check(t, replayProperty)
}

// CheckSnapshots checks, on random command sequences, that the state after
// any prefix of the events, encoded with the codec and decoded again,
// equals that state, and that it plus the remaining events equals the
// state of a full replay.
func CheckSnapshots[S, C, E any](t rapid.TB, spec Spec[S, C, E]) {
	t.Helper()
	spec.check(t, snapshotsProperty)
}

// Check runs CheckInvariants, CheckReplay and CheckSnapshots on the same
// command sequences.
func Check[S, C, E any](t rapid.TB, spec Spec[S, C, E]) {
	t.Helper()
	spec.check(t, invariantsProperty, replayProperty, snapshotsProperty)
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
	d, codec := s.Decider, s.codec()
	state := d.Initial()
	if err := s.invariants(state); err != nil {
		return fmt.Errorf("initial state %#v breaks an invariant: %w", state, err)
	}
	// enc is the encoding of state, to notice a Decide or an Evolve
	// that changes it; states that cannot be encoded are not watched.
	enc, encErr := codec.Marshal(state)
	var steps []step[C, E]
	for _, cmd := range cmds {
		events, err := d.Decide(state, cmd)
		steps = append(steps, step[C, E]{cmd, events, err})
		if encErr == nil {
			if after, err := codec.Marshal(state); err != nil || !bytes.Equal(enc, after) {
				return fmt.Errorf("aggtest: Decide changed the state it was given (%s became %s) after:%s", enc, after, trace(steps))
			}
		}
		if err != nil {
			if len(events) > 0 {
				return fmt.Errorf("a rejected command returned %d event(s) after:%s", len(events), trace(steps))
			}
			continue
		}
		for _, e := range events {
			next := d.Evolve(state, e)
			if encErr == nil {
				if again, err := codec.Marshal(state); err != nil || !bytes.Equal(enc, again) {
					return fmt.Errorf("aggtest: Evolve changed the state it was given (%s became %s) on %#v after:%s", enc, again, e, trace(steps))
				}
			}
			state = next
			enc, encErr = codec.Marshal(state)
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

// outcome is what handling a command sequence from the initial state
// gave: the steps, every event in order, and the final state.
type outcome[S, C, E any] struct {
	steps  []step[C, E]
	events []E
	state  S
	done   bool // false in the zero outcome, before the run
}

// run handles cmds from the initial state.
func (s Spec[S, C, E]) run(cmds []C) outcome[S, C, E] {
	d := s.Decider
	o := outcome[S, C, E]{state: d.Initial(), done: true}
	for _, cmd := range cmds {
		events, err := d.Decide(o.state, cmd)
		o.steps = append(o.steps, step[C, E]{cmd, events, err})
		if err != nil {
			continue
		}
		o.events = append(o.events, events...)
		o.state = aggregate.Fold(d, o.state, events...)
	}
	return o
}

// VerifyReplay checks the replay property (see CheckReplay) on one command
// sequence.
func (s Spec[S, C, E]) VerifyReplay(cmds []C) error {
	return s.verifyReplay(s.run(cmds))
}

func (s Spec[S, C, E]) verifyReplay(o outcome[S, C, E]) error {
	d := s.Decider
	// Decide again on freshly replayed states: same answers.
	replayed := d.Initial()
	for i, st := range o.steps {
		events, err := d.Decide(replayed, st.cmd)
		if !reflect.DeepEqual(events, st.events) || (err == nil) != (st.err == nil) || (err != nil && err.Error() != st.err.Error()) {
			return fmt.Errorf("aggtest: Decide is not deterministic: on the same state it answered %v / %v, then %v / %v\nafter:%s",
				st.events, st.err, events, err, trace(o.steps[:i+1]))
		}
		if err == nil {
			replayed = aggregate.Fold(d, replayed, events...)
		}
	}
	full := aggregate.Fold(d, d.Initial(), o.events...)
	if !s.equal(full, o.state) {
		return fmt.Errorf("replaying the %d events gives %#v, but handling the commands gave %#v\nafter:%s", len(o.events), full, o.state, trace(o.steps))
	}
	return nil
}

// VerifySnapshots checks the snapshot property (see CheckSnapshots) on one
// command sequence.
func (s Spec[S, C, E]) VerifySnapshots(cmds []C) error {
	return s.verifySnapshots(s.run(cmds))
}

func (s Spec[S, C, E]) verifySnapshots(o outcome[S, C, E]) error {
	d, codec, all := s.Decider, s.codec(), o.events
	full := aggregate.Fold(d, d.Initial(), all...)
	at := d.Initial() // the state after the first cut events
	for cut := 0; cut <= len(all); cut++ {
		if cut > 0 {
			at = d.Evolve(at, all[cut-1])
		}
		data, err := codec.Marshal(at)
		if err != nil {
			return fmt.Errorf("cannot encode the state after %d event(s) %#v: %w\nafter:%s", cut, at, err, trace(o.steps))
		}
		var restored S
		if err := codec.Unmarshal(data, &restored); err != nil {
			return fmt.Errorf("cannot decode the snapshot after %d event(s) %s: %w\nafter:%s", cut, data, err, trace(o.steps))
		}
		if !s.equal(restored, at) {
			return fmt.Errorf("the snapshot after %d event(s) restores %#v, want %#v (encoded %s)\nafter:%s", cut, restored, at, data, trace(o.steps))
		}
		if got := aggregate.Fold(d, restored, all[cut:]...); !s.equal(got, full) {
			return fmt.Errorf("the snapshot after %d event(s) plus the other %d give %#v, but a full replay gives %#v\nafter:%s",
				cut, len(all)-cut, got, full, trace(o.steps))
		}
	}
	return nil
}
