package clustertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ErrNotRunning is returned when a process is signalled that is not running.
var ErrNotRunning = errors.New("clustertest: process is not running")

// findBinary looks name up on PATH, then in /usr/bin and /usr/sbin (Debian
// puts nats-server in /usr/sbin, which a non-root PATH may lack).
func findBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/bin", "/usr/sbin", "/usr/local/bin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH or in /usr/bin, /usr/sbin", name)
}

// mustBinary returns the path of name or fails tb, naming the Debian
// package that provides it.
func mustBinary(tb testing.TB, name, pkg string) string {
	tb.Helper()
	p, err := findBinary(name)
	if err != nil {
		tb.Fatalf("clustertest: %v: install Debian's %s package (sudo apt-get install %s; make test and make test-cluster do it via scripts/cluster-deps.sh)", err, pkg, pkg)
	}
	return p
}

// freePorts returns n distinct free TCP ports on 127.0.0.1. They are free
// when it returns; a process started on them soon after almost always gets
// them (callers retry with new ports when one is taken meanwhile).
func freePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("clustertest: free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// proc is one server process. It runs in its own process group, so that
// signals reach any child it forks (redis-server forks for BGSAVE and AOF
// rewrites), and dies with the test binary's thread that started it
// (Pdeathsig) if the test process is killed before its cleanup runs.
type proc struct {
	name string // for messages: "redis 127.0.0.1:7001", "nats n1"
	bin  string
	args []string
	dir  string // working directory
	out  string // stdout and stderr go here (appended)

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has exited and been reaped
	stopped bool          // SIGSTOPped
}

func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("clustertest: %s is already running (pid %d)", p.name, p.cmd.Process.Pid)
		}
	}
	out, err := os.OpenFile(p.out, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("clustertest: %s: %w", p.name, err)
	}
	defer out.Close() // the child has its own copy
	cmd := exec.Command(p.bin, p.args...)
	cmd.Dir = p.dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("clustertest: start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	p.cmd, p.done, p.stopped = cmd, done, false
	return nil
}

// exited returns a channel closed when the current process has exited.
func (p *proc) exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return p.done
}

func (p *proc) running() bool {
	select {
	case <-p.exited():
		return false
	default:
		return true
	}
}

func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// signal sends sig to the process group of the running process.
func (p *proc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return fmt.Errorf("%w: %s", ErrNotRunning, p.name)
	}
	select {
	case <-p.done:
		return fmt.Errorf("%w: %s", ErrNotRunning, p.name)
	default:
	}
	pid := p.cmd.Process.Pid
	if err := syscall.Kill(-pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("clustertest: %s to %s (pid %d): %w", sig, p.name, pid, err)
	}
	switch sig {
	case syscall.SIGSTOP:
		p.stopped = true
	case syscall.SIGCONT:
		p.stopped = false
	}
	return nil
}

func (p *proc) isStopped() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopped
}

// kill sends SIGKILL and waits until the process is gone. Killing a process
// that is not running does nothing.
func (p *proc) kill() error {
	if err := p.signal(syscall.SIGKILL); err != nil {
		if errors.Is(err, ErrNotRunning) {
			return nil
		}
		return err
	}
	select {
	case <-p.exited():
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("clustertest: %s (pid %d) did not exit after SIGKILL", p.name, p.pid())
	}
}

// tail returns the last n lines of the process's output file and of the
// extra log files given.
func (p *proc) tail(n int, logs ...string) string {
	var b strings.Builder
	for _, f := range append([]string{p.out}, logs...) {
		data, err := os.ReadFile(f)
		if err != nil || len(bytes.TrimSpace(data)) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > n {
			lines = lines[len(lines)-n:]
		}
		fmt.Fprintf(&b, "--- %s (%s)\n%s\n", p.name, f, strings.Join(lines, "\n"))
	}
	return b.String()
}

// waitFor polls check every interval until it returns nil, ctx ends (then
// it returns the last check error with ctx's), or abort is closed (a nil
// abort never is).
func waitFor(ctx context.Context, interval time.Duration, abort <-chan struct{}, check func(context.Context) error) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		err := check(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-abort:
			return fmt.Errorf("process exited (last: %w)", err)
		case <-t.C:
		}
	}
}
