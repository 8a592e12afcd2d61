package aggtest_test

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"pgregory.net/rapid"

	"github.com/eskit/eskit/aggregate/aggtest"
)

// countingDecider counts the command sequences a check tries: each
// CheckInvariants case asks for the initial state once.
type countingDecider struct {
	WalletDecider
	initials *atomic.Int64
}

func (d countingDecider) Initial() Wallet {
	d.initials.Add(1)
	return d.WalletDecider.Initial()
}

// skipIfRapidCommandLine skips tests of the defaults when the command
// line or the environment sets rapid's count or seed.
func skipIfRapidCommandLine(t *testing.T) {
	t.Helper()
	set := false
	flag.Visit(func(f *flag.Flag) {
		set = set || f.Name == "rapid.checks" || f.Name == "rapid.seed"
	})
	for _, v := range []string{"RAPID_CHECKS", "RAPID_SEED"} {
		if _, ok := os.LookupEnv(v); ok {
			set = true
		}
	}
	if set {
		t.Skip("rapid's count or seed is set on the command line")
	}
}

// frozenLimitBugFound reports whether out shows the wallet's bug: the
// unfreeze puts in force a limit below what is drawn.
func frozenLimitBugFound(out string) bool {
	return strings.Contains(out, "breaks an invariant: balance -") &&
		strings.Contains(out, "aggtest_test.SetLimit{") && strings.Contains(out, "aggtest_test.Unfreeze{}")
}

// TestDefaultsFindFrozenLimitBug: the wallet's bug needs five commands in
// an order, open, withdraw into the overdraft, freeze, lower the limit,
// unfreeze, so about one drawn sequence in 65 shows it, and hardly any of
// the short sequences a plain rapid slice draws. The defaults find it in
// every fresh run (a run misses it with a probability of about 2e-7).
func TestDefaultsFindFrozenLimitBug(t *testing.T) {
	skipIfRapidCommandLine(t)
	// Finding is what this test is about: no time for shrinking (set
	// before the runs start, put back after they end).
	if err := flag.Set("rapid.shrinktime", "0"); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := flag.Set("rapid.shrinktime", flag.Lookup("rapid.shrinktime").DefValue); err != nil {
			t.Error(err)
		}
	}()
	const runs = 20
	fakes := make([]*fakeTB, runs)
	var wg sync.WaitGroup
	for i := range fakes {
		fakes[i] = &fakeTB{name: fmt.Sprintf("run%d", i)}
		wg.Go(func() {
			s := walletSpec(true)
			if testing.Short() {
				s.Checks = 5 * aggtest.DefaultChecks // -short makes rapid try a fifth
			}
			fakes[i].run(func(tb rapid.TB) { aggtest.CheckInvariants(tb, s) })
		})
	}
	wg.Wait()
	for i, f := range fakes {
		if out := f.output(); !f.Failed() || !frozenLimitBugFound(out) {
			t.Errorf("run %d did not find the bug:\n%s", i, out)
		}
	}

	// For comparison: one rapid run of plain rapid slices, the old
	// defaults, finds it about one time in ten.
	old := 0
	for range runs {
		s := walletSpec(true)
		f := new(fakeTB).run(func(tb rapid.TB) {
			rapid.Check(tb, func(rt *rapid.T) {
				if s.VerifyInvariants(rapid.SliceOfN(s.Commands, 0, 50).Draw(rt, "commands")) != nil {
					rt.FailNow()
				}
			})
		})
		if f.Failed() {
			old++
		}
	}
	t.Logf("the old defaults found the bug in %d of %d runs", old, runs)
}

func TestCheckInsideRapidCheck(t *testing.T) {
	t.Run("draws one sequence from the outer T", func(t *testing.T) {
		var cases, sequences atomic.Int64
		rapid.Check(t, func(rt *rapid.T) {
			cases.Add(1)
			s := walletSpec(false)
			s.Decider = countingDecider{initials: &sequences}
			s.MaxCommands = rapid.IntRange(1, 50).Draw(rt, "max")
			aggtest.CheckInvariants(rt, s)
		})
		if cases.Load() != sequences.Load() {
			t.Errorf("%d outer cases tried %d sequences, want one each", cases.Load(), sequences.Load())
		}
	})

	t.Run("fails, shrinks and replays its fail file", func(t *testing.T) {
		t.Chdir(t.TempDir())
		if err := flag.Set("rapid.nofailfile", "false"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := flag.Set("rapid.nofailfile", "true"); err != nil {
				t.Error(err)
			}
		})
		nested := func(tb rapid.TB) {
			rapid.Check(tb, func(rt *rapid.T) {
				aggtest.CheckInvariants(rt, overdraftSpec())
			})
		}
		first := (&fakeTB{name: "TestNested"}).run(nested)
		files, err := filepath.Glob(filepath.Join("testdata", "rapid", "TestNested", "*.fail"))
		if err != nil || len(files) != 1 {
			t.Fatalf("fail files %v (%v), want one", files, err)
		}
		// The next run replays the fail file first.
		again := (&fakeTB{name: "TestNested"}).run(nested)
		for name, f := range map[string]*fakeTB{"first run": first, "replay": again} {
			t.Run(name, func(t *testing.T) {
				out := f.output()
				if !f.Failed() {
					t.Fatalf("the overdraft was not found:\n%s", out)
				}
				overdraftReported(t, out)
				if strings.Contains(out, "no longer valid") {
					t.Error(out)
				}
			})
		}
		if out := again.output(); !strings.Contains(out, "failed after 0 tests") {
			t.Errorf("the second run did not start with the fail file:\n%s", out)
		}
	})
}

func TestChecksCount(t *testing.T) {
	skipIfRapidCommandLine(t)
	perRun := 100 // rapid's default -rapid.checks
	if testing.Short() {
		perRun /= 5
	}
	for _, c := range []struct{ checks, runs int }{{0, 10}, {250, 3}, {1, 1}} {
		var n atomic.Int64
		s := walletSpec(false)
		s.Decider = countingDecider{initials: &n}
		s.Checks = c.checks
		if f := new(fakeTB).run(func(tb rapid.TB) { aggtest.CheckInvariants(tb, s) }); f.Failed() {
			t.Fatalf("Checks %d: %s", c.checks, f.output())
		}
		if got, want := n.Load(), int64(c.runs*perRun); got != want {
			t.Errorf("Checks %d: tried %d sequences, want %d", c.checks, got, want)
		}
	}
}

// TestCommandLineSetsChecks runs this test binary again with rapid's
// flags: -rapid.checks gives the number of sequences, overriding
// Spec.Checks, and -rapid.seed makes it one rapid run.
func TestCommandLineSetsChecks(t *testing.T) {
	if os.Getenv("AGGTEST_CHILD") == "1" {
		var n atomic.Int64
		s := walletSpec(false)
		s.Decider = countingDecider{initials: &n}
		s.Checks = 5000
		aggtest.CheckInvariants(t, s)
		fmt.Printf("aggtest tried %d sequences\n", n.Load())
		return
	}
	env := []string{"AGGTEST_CHILD=1"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RAPID_") {
			env = append(env, kv)
		}
	}
	for arg, want := range map[string]int{"-rapid.checks=30": 30, "-rapid.seed=12345": 100} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCommandLineSetsChecks$", arg)
		// Without the race detector's second of sleep at exit.
		cmd.Env = append(env, "GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", arg, err, out)
		}
		if line := fmt.Sprintf("aggtest tried %d sequences\n", want); !strings.Contains(string(out), line) {
			t.Errorf("%s: output lacks %q:\n%s", arg, line, out)
		}
	}
}
