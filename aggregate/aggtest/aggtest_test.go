package aggtest_test

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"

	"pgregory.net/rapid"

	"github.com/eskit/eskit/aggregate"
	"github.com/eskit/eskit/aggregate/aggtest"
	"github.com/eskit/eskit/aggregate/internal/account"
)

func TestMain(m *testing.M) {
	flag.Parse()
	// Some tests make property checks fail on purpose: keep rapid from
	// writing fail files for them.
	if err := flag.Set("rapid.nofailfile", "true"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	os.Exit(m.Run())
}

type (
	state = account.State
	cmd   = account.Command
	event = account.Event
)

var decider aggregate.Decider[state, cmd, event] = account.Decider{}

func commands() *rapid.Generator[cmd] {
	amount := rapid.Int64Range(-5, 1200)
	return rapid.OneOf(
		rapid.Map(rapid.SampledFrom([]string{"ann", "bob"}), func(o string) cmd { return account.Open{Owner: o} }),
		rapid.Map(amount, func(a int64) cmd { return account.Deposit{Amount: a} }),
		rapid.Map(amount, func(a int64) cmd { return account.Withdraw{Amount: a} }),
	)
}

func spec() aggtest.Spec[state, cmd, event] {
	return aggtest.Spec[state, cmd, event]{
		Decider:    decider,
		Commands:   commands(),
		Invariants: []func(state) error{account.Invariant},
	}
}

func TestScenarios(t *testing.T) {
	aggtest.Given(t, decider).
		When(account.Open{Owner: "ann"}).
		Then(account.Opened{Owner: "ann"}).
		ThenState(func(s state) {
			if !s.Open || s.Owner != "ann" {
				t.Errorf("state %+v", s)
			}
		})
	aggtest.For(t, decider).Given(account.Opened{Owner: "ann"}, account.Deposited{Amount: 900}).
		When(account.Deposit{Amount: 100}).
		Then(account.Deposited{Amount: 100}, account.BecameVIP{}).
		ThenState(func(s state) {
			if s.Balance != 1000 || !s.VIP {
				t.Errorf("state %+v", s)
			}
		})
	aggtest.For(t, decider).Given(account.Opened{Owner: "ann"}).
		When(account.Open{Owner: "ann"}).
		Then()
	aggtest.For(t, decider).Given(account.Opened{Owner: "ann"}).
		When(account.Open{Owner: "bob"}).
		ThenError(account.ErrAlreadyOpen)
	var insufficient *account.InsufficientFundsError
	aggtest.For(t, decider).Given(account.Opened{Owner: "ann"}, account.Deposited{Amount: 5}).
		When(account.Withdraw{Amount: 6}).
		ThenErrorAs(&insufficient)
	if insufficient == nil || insufficient.Balance != 5 {
		t.Fatalf("ThenErrorAs did not assign the error: %v", insufficient)
	}
	// Without When, ThenState sees the given state.
	aggtest.For(t, decider).Given(account.Opened{Owner: "ann"}, account.Deposited{Amount: 5}, account.Withdrawn{Amount: 2}).
		ThenState(func(s state) {
			if s.Balance != 3 {
				t.Errorf("given state %+v", s)
			}
		})
}

// recorder is a TB that records failures instead of failing the test.
type recorder struct {
	mu     sync.Mutex
	errors []string
	fatal  bool
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	r.mu.Lock()
	r.fatal = true
	r.mu.Unlock()
}
func (r *recorder) output() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.errors, "\n")
}

func TestScenarioFailureMessages(t *testing.T) {
	given := []event{account.Opened{Owner: "ann"}, account.Deposited{Amount: 900}}
	cases := []struct {
		name string
		run  func(tb aggtest.TB)
		want []string
	}{
		{"wrong events", func(tb aggtest.TB) {
			aggtest.For(tb, decider).Given(given...).When(account.Deposit{Amount: 100}).Then(account.Deposited{Amount: 10})
		}, []string{
			"given 2 event(s)", "account.Deposited{Amount:900}", "when account.Deposit{Amount:100}",
			"events differ (- want, + got)",
			"[0] - account.Deposited{Amount:10}", "[0] + account.Deposited{Amount:100}",
			"[1] + account.BecameVIP{}",
		}},
		{"rejected instead of events", func(tb aggtest.TB) {
			aggtest.Given(tb, decider).When(account.Deposit{Amount: 1}).Then(account.Deposited{Amount: 1})
		}, []string{"given no events", "want events:", "account.Deposited{Amount:1}", "got the rejection: account: not open"}},
		{"events instead of rejection", func(tb aggtest.TB) {
			aggtest.Given(tb, decider, given...).When(account.Withdraw{Amount: 1}).ThenError(account.ErrNotOpen)
		}, []string{"want the rejection account: not open", "got events:", "account.Withdrawn{Amount:1}"}},
		{"other rejection", func(tb aggtest.TB) {
			aggtest.For(tb, decider).Given(given...).When(account.Withdraw{Amount: -1}).ThenError(account.ErrNotOpen)
		}, []string{"want an error matching account: not open", "got account: amount must be positive"}},
		{"rejection instead of state", func(tb aggtest.TB) {
			aggtest.Given(tb, decider).When(account.Withdraw{Amount: 1}).ThenState(func(state) {})
		}, []string{"want a state, got the rejection"}},
		{"Then before When", func(tb aggtest.TB) {
			aggtest.Given(tb, decider).Then()
		}, []string{"Then before When"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var r recorder
			c.run(&r)
			out := r.output()
			if out == "" {
				t.Fatal("the scenario did not fail")
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("failure message lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestPropertiesHoldForAccount(t *testing.T) {
	aggtest.Check(t, spec())
	// Check runs the other three on the default number of sequences.
	one := spec()
	one.Checks = 100
	aggtest.CheckInvariants(t, one)
	aggtest.CheckReplay(t, one)
	aggtest.CheckSnapshots(t, one)
}

// mapState is a state with a map, to catch deciders that change states in
// place.
type mapState struct{ Counts map[string]int }

func mapDecider(mutateInDecide, mutateInEvolve bool) aggregate.DeciderFuncs[mapState, string, string] {
	return aggregate.DeciderFuncs[mapState, string, string]{
		InitialFunc: func() mapState { return mapState{Counts: map[string]int{}} },
		DecideFunc: func(s mapState, c string) ([]string, error) {
			if c == "" {
				if mutateInDecide {
					s.Counts["rejected"]++
				}
				return nil, errors.New("empty")
			}
			return []string{c}, nil
		},
		EvolveFunc: func(s mapState, e string) mapState {
			if mutateInEvolve {
				s.Counts[e]++
				return s
			}
			next := mapState{Counts: make(map[string]int, len(s.Counts)+1)}
			for k, v := range s.Counts {
				next.Counts[k] = v
			}
			next.Counts[e]++
			return next
		},
	}
}

func TestVerifyFindsBugs(t *testing.T) {
	overdraft := aggregate.DeciderFuncs[state, cmd, event]{
		InitialFunc: decider.Initial,
		EvolveFunc:  decider.Evolve,
		DecideFunc: func(s state, c cmd) ([]event, error) {
			if w, ok := c.(account.Withdraw); ok && s.Open && w.Amount > 0 {
				return []event{account.Withdrawn(w)}, nil // no balance check
			}
			return decider.Decide(s, c)
		},
	}
	leaky := aggregate.DeciderFuncs[state, cmd, event]{
		InitialFunc: decider.Initial,
		EvolveFunc:  decider.Evolve,
		DecideFunc: func(s state, c cmd) ([]event, error) {
			evs, err := decider.Decide(s, c)
			if err != nil {
				return []event{account.Deposited{Amount: 1}}, err
			}
			return evs, nil
		},
	}
	calls := 0
	random := aggregate.DeciderFuncs[int, int, int]{
		DecideFunc: func(s, c int) ([]int, error) {
			calls++
			return []int{c + calls%2}, nil
		},
		EvolveFunc: func(s, e int) int { return s + e },
	}
	type hidden struct {
		Total int
		count int
	}
	unexported := aggregate.DeciderFuncs[hidden, int, int]{
		DecideFunc: func(s hidden, c int) ([]int, error) { return []int{c}, nil },
		EvolveFunc: func(s hidden, e int) hidden { return hidden{Total: s.Total + e, count: s.count + 1} },
	}
	ops := []cmd{account.Open{Owner: "ann"}, account.Deposit{Amount: 5}, account.Withdraw{Amount: 10}}

	cases := []struct {
		name string
		err  error
		want string
	}{
		{"invariant", aggtest.Spec[state, cmd, event]{Decider: overdraft, Invariants: []func(state) error{account.Invariant}}.VerifyInvariants(ops),
			"breaks an invariant: negative balance -5"},
		{"rejected with events", aggtest.Spec[state, cmd, event]{Decider: leaky}.VerifyInvariants([]cmd{account.Deposit{Amount: 1}}),
			"a rejected command returned 1 event(s)"},
		{"Decide mutates", aggtest.Spec[mapState, string, string]{Decider: mapDecider(true, false)}.VerifyInvariants([]string{"a", ""}),
			"Decide changed the state it was given"},
		{"Evolve mutates", aggtest.Spec[mapState, string, string]{Decider: mapDecider(false, true)}.VerifyInvariants([]string{"a", "b"}),
			"Evolve changed the state it was given"},
		{"nondeterministic Decide", aggtest.Spec[int, int, int]{Decider: random}.VerifyReplay([]int{5}),
			"Decide is not deterministic"},
		{"state lost in a snapshot", aggtest.Spec[hidden, int, int]{Decider: unexported}.VerifySnapshots([]int{3, 4}),
			"the snapshot after 1 event(s) restores"},
	}
	for _, c := range cases {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", c.name, c.err, c.want)
		}
	}
	// The honest map decider passes everything.
	if err := (aggtest.Spec[mapState, string, string]{Decider: mapDecider(false, false)}).Verify([]string{"a", "", "b", "a"}); err != nil {
		t.Errorf("correct map decider: %v", err)
	}
}

// fakeTB is a rapid.TB that records everything a test would print, in
// order; FailNow and SkipNow end the goroutine.
type fakeTB struct {
	name   string
	mu     sync.Mutex
	lines  []string
	failed bool
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Name() string {
	if f.name == "" {
		return "fake"
	}
	return f.name
}
func (f *fakeTB) Logf(format string, args ...any) { f.print(fmt.Sprintf(format, args...)) }
func (f *fakeTB) Log(args ...any)                 { f.print(fmt.Sprintln(args...)) }
func (f *fakeTB) Skipf(format string, args ...any) {
	f.Logf(format, args...)
	f.SkipNow()
}
func (f *fakeTB) Skip(args ...any) {
	f.Log(args...)
	f.SkipNow()
}
func (f *fakeTB) SkipNow() { runtime.Goexit() }
func (f *fakeTB) Errorf(format string, args ...any) {
	f.Logf(format, args...)
	f.Fail()
}
func (f *fakeTB) Error(args ...any) {
	f.Log(args...)
	f.Fail()
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.Errorf(format, args...)
	f.FailNow()
}
func (f *fakeTB) Fatal(args ...any) {
	f.Error(args...)
	f.FailNow()
}
func (f *fakeTB) FailNow() {
	f.Fail()
	runtime.Goexit()
}
func (f *fakeTB) Fail() {
	f.mu.Lock()
	f.failed = true
	f.mu.Unlock()
}
func (f *fakeTB) Failed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

func (f *fakeTB) print(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lines = append(f.lines, strings.TrimSuffix(s, "\n"))
}

// output is everything printed, a line per call.
func (f *fakeTB) output() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.lines, "\n")
}

// run calls check with f in a goroutine of its own, as the testing
// package runs a test, and waits for it to end.
func (f *fakeTB) run(check func(tb rapid.TB)) *fakeTB {
	done := make(chan struct{})
	go func() {
		defer close(done)
		check(f)
	}()
	<-done
	return f
}

// overdraftSpec is spec with a decider that lets withdrawals overdraw.
func overdraftSpec() aggtest.Spec[state, cmd, event] {
	s := spec()
	s.Decider = aggregate.DeciderFuncs[state, cmd, event]{
		InitialFunc: decider.Initial,
		EvolveFunc:  decider.Evolve,
		DecideFunc: func(s state, c cmd) ([]event, error) {
			if w, ok := c.(account.Withdraw); ok && s.Open && w.Amount > 0 {
				return []event{account.Withdrawn(w)}, nil
			}
			return decider.Decide(s, c)
		},
	}
	return s
}

// overdraftReported checks out reports the overdraft once, on the
// shortest sequence that shows it.
func overdraftReported(t *testing.T, out string) {
	t.Helper()
	for _, w := range []string{
		"aggtest: invariants: state account.State{",
		"breaks an invariant: negative balance -1",
		"\n  1. account.Open{", "\n  2. account.Withdraw{Amount:1} -> 1 event(s)",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("failure output lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "\n  3. ") {
		t.Errorf("failing sequence not shrunk to two commands:\n%s", out)
	}
	if n := strings.Count(out, "breaks an invariant"); n != 1 {
		t.Errorf("the failure is printed %d times, want once:\n%s", n, out)
	}
}

func TestCheckReportsFailingSequenceOnce(t *testing.T) {
	s := overdraftSpec()
	checks := map[string]func(rapid.TB, aggtest.Spec[state, cmd, event]){
		"CheckInvariants": aggtest.CheckInvariants[state, cmd, event],
		"Check":           aggtest.Check[state, cmd, event],
	}
	for name, check := range checks {
		t.Run(name, func(t *testing.T) {
			f := new(fakeTB).run(func(tb rapid.TB) { check(tb, s) })
			if !f.Failed() {
				t.Fatal("the check passed a decider that allows overdrafts")
			}
			overdraftReported(t, f.output())
		})
	}
}
