package localproc

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
	"time"
)

// ErrNotRunning is returned when a process is signalled that is not running.
var ErrNotRunning = errors.New("process is not running")

// ErrPortTaken reports that a server could not bind its ports (it says
// "Address already in use"); the caller retries with other ports.
var ErrPortTaken = errors.New("port already in use")

// killWait is how long Kill waits for a process to exit after SIGKILL.
const killWait = 10 * time.Second

// FindBinary looks name up on PATH, then in /usr/bin, /usr/sbin and
// /usr/local/bin (Debian puts nats-server in /usr/sbin, which a non-root
// PATH may lack). The error names neither package nor caller: callers add
// which Debian package to install and how.
func FindBinary(name string) (string, error) {
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

// FreePorts returns n distinct free TCP ports on 127.0.0.1. They are free
// when it returns; a process started on them soon after almost always gets
// them (callers retry with new ports when one is taken meanwhile).
func FreePorts(n int) ([]int, error) {
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
			return nil, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Process is one run of a child process. It runs in its own process group,
// so that signals reach any child it forks, and (on Linux) dies with the
// thread that started it (Pdeathsig) if its parent is killed before its
// clean-up runs.
type Process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // what Wait returned; read only after done is closed
}

// Start starts cmd (its SysProcAttr is replaced) as a process named name,
// for messages: "redis 127.0.0.1:7001", "runner process r1".
func Start(name string, cmd *exec.Cmd) (*Process, error) {
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Name returns the name given to Start.
func (p *Process) Name() string { return p.name }

// PID returns the process ID.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Done returns a channel closed once the process has exited and been
// reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err returns what waiting for the process returned (nil for exit status
// 0); call it only after Done is closed.
func (p *Process) Err() error { return p.err }

// Signal sends sig to the process's process group. It returns ErrNotRunning
// once the process has exited.
func (p *Process) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return fmt.Errorf("%w: %s", ErrNotRunning, p.name)
	}
	if err := syscall.Kill(-p.PID(), sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill -%d %s (pid %d): %w", int(sig), p.name, p.PID(), err)
	}
	return nil
}

// Kill sends SIGKILL to the process group and waits until the process has
// exited. Killing a process that has exited does nothing.
func (p *Process) Kill() error {
	if err := p.Signal(syscall.SIGKILL); err != nil {
		if errors.Is(err, ErrNotRunning) {
			return nil
		}
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(killWait):
		return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, p.PID())
	}
}

// Server is a server process that can be started again after it exits:
// the same binary, arguments, working directory and output file each time.
// Its methods are safe for concurrent use; set its fields before the first
// Start and do not change them afterwards.
type Server struct {
	Name string // for messages: "redis 127.0.0.1:7001", "nats n1"
	Bin  string
	Args []string
	Dir  string // working directory
	Out  string // stdout and stderr go here (appended)
	// OnStart, when set, is told the PID of every process started.
	OnStart func(pid int)

	mu      sync.Mutex
	cur     *Process // the last process started
	stopped bool     // SIGSTOPped
}

// Start starts the process; it fails when the last one still runs.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil && !s.cur.Exited() {
		return fmt.Errorf("%s is already running (pid %d)", s.Name, s.cur.PID())
	}
	out, err := os.OpenFile(s.Out, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s: %w", s.Name, err)
	}
	defer out.Close() // the child has its own copy
	cmd := exec.Command(s.Bin, s.Args...)
	cmd.Dir = s.Dir
	cmd.Stdout, cmd.Stderr = out, out
	p, err := Start(s.Name, cmd)
	if err != nil {
		return err
	}
	s.cur, s.stopped = p, false
	if s.OnStart != nil {
		s.OnStart(p.PID())
	}
	return nil
}

func (s *Server) current() *Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// Exited returns a channel closed when the current process has exited
// (at once when none was started).
func (s *Server) Exited() <-chan struct{} {
	p := s.current()
	if p == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return p.Done()
}

// Running reports whether the current process runs (frozen or not).
func (s *Server) Running() bool {
	p := s.current()
	return p != nil && !p.Exited()
}

// PID returns the process ID of the last process started, 0 when none was.
func (s *Server) PID() int {
	p := s.current()
	if p == nil {
		return 0
	}
	return p.PID()
}

// Signal sends sig to the process group of the running process and
// remembers whether it is frozen (SIGSTOP, SIGCONT).
func (s *Server) Signal(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return fmt.Errorf("%w: %s", ErrNotRunning, s.Name)
	}
	if err := s.cur.Signal(sig); err != nil {
		return err
	}
	switch sig {
	case syscall.SIGSTOP:
		s.stopped = true
	case syscall.SIGCONT:
		s.stopped = false
	}
	return nil
}

// Stopped reports whether the process was frozen with SIGSTOP (and not
// resumed since).
func (s *Server) Stopped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopped
}

// Kill sends SIGKILL and waits until the process is gone. Killing a process
// that is not running does nothing.
func (s *Server) Kill() error {
	p := s.current()
	if p == nil {
		return nil
	}
	return p.Kill()
}

// Tail returns the last n lines of the process's output file and of the
// extra log files given, each headed by the server's name and the file.
func (s *Server) Tail(n int, logs ...string) string {
	var b strings.Builder
	for _, f := range append([]string{s.Out}, logs...) {
		data, err := os.ReadFile(f)
		if err != nil || len(bytes.TrimSpace(data)) == 0 {
			continue
		}
		fmt.Fprintf(&b, "--- %s (%s)\n%s\n", s.Name, f, TailLines(string(data), n))
	}
	return b.String()
}

// TailLines returns the last n lines of text.
func TailLines(text string, n int) string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TailBuffer keeps the last max bytes written to it, for a child's stderr;
// safe for concurrent use.
type TailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

// NewTailBuffer returns a TailBuffer that keeps max bytes.
func NewTailBuffer(max int) *TailBuffer { return &TailBuffer{max: max} }

func (t *TailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *TailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// WaitFor polls check every interval until it returns nil, ctx ends (then
// it returns the last check error with ctx's), or abort is closed (a nil
// abort never is).
func WaitFor(ctx context.Context, interval time.Duration, abort <-chan struct{}, check func(context.Context) error) error {
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
