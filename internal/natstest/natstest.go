// Package natstest runs an in-process NATS server with JetStream: for tests
// (Start) and for the embedded default (New). A server can be stopped and
// restarted on the same port and store directory, so tests can simulate
// broker outages.
package natstest

import (
	"errors"
	"fmt"
	"github.com/eskit/eskit/outbox"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// EnvURL names the environment variable that points tests at an external
// NATS server.
const EnvURL = "ESKIT_NATS_URL"

// Options configures an in-process server.
type Options struct {
	// Dir is the JetStream store directory; New creates a temporary one
	// (removed by Close) when empty.
	Dir string
	// Host is the listen address; default 127.0.0.1.
	Host string
	// Port is the client port; 0 picks a free one.
	Port int
}

// Server is an in-process NATS server with JetStream.
type Server struct {
	opts    Options
	tempDir bool

	mu  sync.Mutex
	srv *server.Server
}

// New starts a server.
func New(opts Options) (*Server, error) {
	s := &Server{opts: opts}
	if s.opts.Host == "" {
		s.opts.Host = "127.0.0.1"
	}
	if s.opts.Dir == "" {
		dir, err := os.MkdirTemp("", "eskit-nats-*")
		if err != nil {
			return nil, fmt.Errorf("natstest: %w", err)
		}
		s.opts.Dir, s.tempDir = dir, true
	}
	if err := s.start(); err != nil {
		if s.tempDir {
			_ = os.RemoveAll(s.opts.Dir)
		}
		return nil, err
	}
	return s, nil
}

func (s *Server) start() error {
	port := s.opts.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	srv, err := server.NewServer(&server.Options{
		Host:      s.opts.Host,
		Port:      port,
		JetStream: true,
		StoreDir:  s.opts.Dir,
		NoLog:     true,
		NoSigs:    true,
	})
	if err != nil {
		return fmt.Errorf("natstest: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return errors.New("natstest: server did not become ready")
	}
	if s.opts.Port == 0 {
		s.opts.Port = srv.Addr().(*net.TCPAddr).Port
	}
	s.srv = srv
	return nil
}

// URL returns the client URL (stable across restarts).
func (s *Server) URL() string {
	return fmt.Sprintf("nats://%s", net.JoinHostPort(s.opts.Host, fmt.Sprint(s.opts.Port)))
}

// Dir returns the JetStream store directory.
func (s *Server) Dir() string { return s.opts.Dir }

// Running reports whether the server is up.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv != nil
}

// Stop shuts the server down, keeping its store directory; Restart brings it
// back. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return
	}
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	s.srv = nil
}

// Restart stops the server if it runs and starts it again on the same port
// and store directory. It retries briefly while the port is still held.
func (s *Server) Restart() error {
	s.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	for range 50 {
		if err = s.start(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// Close stops the server and removes a store directory New created.
func (s *Server) Close() {
	s.Stop()
	if s.tempDir {
		_ = os.RemoveAll(s.opts.Dir)
	}
}

// Start starts a server for a test, with a store directory under tb's temp
// dir, and stops it when tb ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s, err := New(Options{Dir: tb.TempDir()})
	if err != nil {
		tb.Fatalf("natstest: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

// ConnectOptions are the connection options tests use: reconnect forever,
// quickly, and fail publishes while reconnecting instead of buffering them
// (buffered publishes would reach the server after later retries).
func ConnectOptions() []nats.Option { return outbox.ConnectOptions() }

// Connect connects to url with ConnectOptions (and opts after them) and
// closes the connection when tb ends.
func Connect(tb testing.TB, url string, opts ...nats.Option) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(url, append(ConnectOptions(), opts...)...)
	if err != nil {
		tb.Fatalf("natstest: connect to %s: %v", url, err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// JetStream connects to url (see Connect) and returns a JetStream context.
func JetStream(tb testing.TB, url string, opts ...jetstream.JetStreamOpt) jetstream.JetStream {
	tb.Helper()
	js, err := jetstream.New(Connect(tb, url), opts...)
	if err != nil {
		tb.Fatalf("natstest: %v", err)
	}
	return js
}

// ExternalURL returns ESKIT_NATS_URL and whether it is set.
func ExternalURL() (string, bool) {
	u := os.Getenv(EnvURL)
	return u, u != ""
}
