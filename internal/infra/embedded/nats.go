package embedded

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATSOptions configures an in-process server.
type NATSOptions struct {
	// Dir is the JetStream store directory; New creates a temporary one
	// (removed by Close) when empty.
	Dir string
	// Host is the listen address; default 127.0.0.1.
	Host string
	// Port is the client port; 0 picks a free one.
	Port int
}

// NATS is an in-process NATS server with JetStream.
type NATS struct {
	opts    NATSOptions
	tempDir bool

	mu  sync.Mutex
	srv *server.Server
}

// StartNATS starts a server.
func StartNATS(opts NATSOptions) (*NATS, error) {
	s := &NATS{opts: opts}
	if s.opts.Host == "" {
		s.opts.Host = "127.0.0.1"
	}
	if s.opts.Dir == "" {
		dir, err := os.MkdirTemp("", "eskit-nats-*")
		if err != nil {
			return nil, fmt.Errorf("embedded: %w", err)
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

func (s *NATS) start() error {
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
		return fmt.Errorf("embedded: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return errors.New("embedded: server did not become ready")
	}
	if s.opts.Port == 0 {
		s.opts.Port = srv.Addr().(*net.TCPAddr).Port
	}
	s.srv = srv
	return nil
}

// URL returns the client URL (stable across restarts).
func (s *NATS) URL() string {
	return fmt.Sprintf("nats://%s", net.JoinHostPort(s.opts.Host, fmt.Sprint(s.opts.Port)))
}

// Dir returns the JetStream store directory.
func (s *NATS) Dir() string { return s.opts.Dir }

// Running reports whether the server is up.
func (s *NATS) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv != nil
}

// Stop shuts the server down, keeping its store directory; Restart brings it
// back. Stopping a stopped server does nothing.
func (s *NATS) Stop() {
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
func (s *NATS) Restart() error {
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
func (s *NATS) Close() {
	s.Stop()
	if s.tempDir {
		_ = os.RemoveAll(s.opts.Dir)
	}
}
