//go:build linux

// Package childtest runs a test's own binary as a child process, for tests
// that freeze (SIGSTOP), wake (SIGCONT) or kill a real process: the child
// runs the same test with an environment variable set, which the test
// checks first to play the child's part. The child reports its progress on
// stdout in lines that start with a tag ("LEASE held 12"); the parent waits
// for them with Next. The child runs in its own process group, dies with
// the test (Pdeathsig), and is killed by its PID when the test ends.
package childtest

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Child is a running child test process.
type Child struct {
	tb    testing.TB
	pid   int
	lines chan string
	seen  []string      // the tagged lines read so far
	done  chan struct{} // closed once the child has exited
	err   error         // what waiting for it returned; read after done
}

// Start re-executes the test binary to run only the test named test, with
// env (NAME=value entries) added to its environment. The child's lines
// that start with tag and a space are what Next sees (without the tag);
// its stderr is the test's. The child is killed (by its process group)
// when tb ends.
func Start(tb testing.TB, test, tag string, env ...string) *Child {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(append(os.Environ(), env...), "GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatalf("child %s: %v", test, err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("child %s: %v", test, err)
	}
	c := &Child{tb: tb, pid: cmd.Process.Pid, lines: make(chan string, 1000), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if l, ok := strings.CutPrefix(sc.Text(), tag+" "); ok {
				c.lines <- l
			}
		}
		close(c.lines)
		c.err = cmd.Wait()
		close(c.done)
	}()
	tb.Cleanup(func() {
		// By PID, its process group; SIGKILL also ends a stopped process.
		_ = syscall.Kill(-c.pid, syscall.SIGKILL)
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			tb.Errorf("child %d did not exit", c.pid)
		}
	})
	return c
}

// PID returns the child's process ID (its process group's too).
func (c *Child) PID() int { return c.pid }

// Next waits for the child's next line that starts with prefix, logging
// the lines before it, and fails the test when the child exits first or
// none comes within the given time.
func (c *Child) Next(prefix string, within time.Duration) string {
	c.tb.Helper()
	timeout := time.After(within)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				c.tb.Fatalf("the child exited before %q", prefix)
			}
			c.tb.Logf("child: %s", l)
			c.seen = append(c.seen, l)
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-timeout:
			c.tb.Fatalf("no %q from the child within %s", prefix, within)
		}
	}
}

// Lines returns every tagged line the child printed that Next has read,
// and, once Wait has returned, the ones it printed after those. Call it
// from the test's goroutine, as Next.
func (c *Child) Lines() []string {
	select {
	case <-c.done:
		for l := range c.lines {
			c.seen = append(c.seen, l)
		}
	default:
	}
	return c.seen
}

// Signal sends sig to the child's process group.
func (c *Child) Signal(sig syscall.Signal) error { return syscall.Kill(-c.pid, sig) }

// Wait waits for the child to exit and returns what waiting for it
// returned (nil for exit status 0); it fails the test when the child runs
// on for longer than within.
func (c *Child) Wait(within time.Duration) error {
	c.tb.Helper()
	select {
	case <-c.done:
		return c.err
	case <-time.After(within):
		c.tb.Fatalf("the child did not exit within %s", within)
		return nil
	}
}
