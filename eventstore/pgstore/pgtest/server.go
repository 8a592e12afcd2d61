package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Server is a PostgreSQL server of a test's own, in a temporary data
// directory, for tests that stop, kill and restart it (which the shared
// server must never see). Start it with StartServer; it is stopped, by
// its process group, and its directory removed when the test ends.
type Server struct {
	tb   testing.TB
	bin  string
	dir  string
	port int
	cred *syscall.Credential
	cmd  *exec.Cmd
	done chan struct{}
}

// binDir finds the PostgreSQL server's binaries: pg_config's bindir, or
// Debian's /usr/lib/postgresql/<version>/bin (the newest).
func binDir() (string, error) {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("no PostgreSQL server binaries (pg_config --bindir, /usr/lib/postgresql/*/bin)")
}

// StartServer initialises a data directory (trust authentication, user
// postgres) and starts a server on a free loopback port. As root, the
// server runs as the postgres user. A machine without the server's
// binaries skips the test, saying so.
func StartServer(tb testing.TB) *Server {
	tb.Helper()
	bin, err := binDir()
	if err != nil {
		tb.Skipf("pgtest: %v: install PostgreSQL's server package to run this test", err)
	}
	dir, err := os.MkdirTemp("", "eskit-pg-")
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	s := &Server{tb: tb, bin: bin, dir: dir}
	if os.Getuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			tb.Fatalf("pgtest: running as root needs the postgres user to run the server: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			tb.Fatalf("pgtest: %v", err)
		}
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", s.data(), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGKILL}
	if out, err := initdb.CombinedOutput(); err != nil {
		tb.Fatalf("pgtest: initdb: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	s.port = ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	tb.Cleanup(func() { s.signal(syscall.SIGKILL) })
	s.Start()
	return s
}

func (s *Server) data() string { return filepath.Join(s.dir, "data") }

// URL returns the URL of the server's postgres database.
func (s *Server) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
}

// Start starts the server (after Stop or Kill) on its port, and waits
// until it accepts queries.
func (s *Server) Start() {
	s.tb.Helper()
	cmd := exec.Command(filepath.Join(s.bin, "postgres"), "-D", s.data(), "-p", strconv.Itoa(s.port),
		"-k", s.dir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=100")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	logf, err := os.OpenFile(filepath.Join(s.dir, "server.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		s.tb.Fatalf("pgtest: %v", err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		s.tb.Fatalf("pgtest: start the server: %v", err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = logf.Close()
		close(s.done)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, s.URL())
		if err == nil {
			err = conn.Ping(ctx)
			_ = conn.Close(ctx)
		}
		cancel()
		if err == nil {
			return
		}
		select {
		case <-s.done:
			log, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
			s.tb.Fatalf("pgtest: the server exited at start:\n%s", log)
		default:
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("pgtest: the server does not answer: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// signal sends sig to the server's process group, if it runs.
func (s *Server) signal(sig syscall.Signal) {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, sig)
}

// wait waits for the server's exit.
func (s *Server) wait() {
	s.tb.Helper()
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.tb.Fatal("pgtest: the server did not stop")
	}
}

// Stop shuts the server down as an operator would (fast shutdown: every
// session ends, open transactions roll back) and waits for it to exit.
func (s *Server) Stop() {
	s.tb.Helper()
	s.signal(syscall.SIGINT)
	s.wait()
}

// Kill kills the server and every backend (SIGKILL, as a crash): the next
// Start recovers from the WAL.
func (s *Server) Kill() {
	s.tb.Helper()
	s.signal(syscall.SIGKILL)
	s.wait()
}
