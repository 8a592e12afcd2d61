// Package natstest gives tests an in-process NATS server with JetStream
// (Start; the server itself is embedded.NATS) and connections to it. A server can be stopped and
// restarted on the same port and store directory, so tests can simulate
// broker outages.
package natstest

import (
	"os"
	"testing"

	"github.com/eskit/eskit/internal/infra/embedded"
	"github.com/eskit/eskit/outbox"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// EnvURL names the environment variable that points tests at an external
// NATS server.
const EnvURL = "ESKIT_NATS_URL"

// Server is an in-process NATS server with JetStream (embedded.NATS).
type Server = embedded.NATS

// Options configures an in-process server.
type Options = embedded.NATSOptions

// New starts a server (embedded.StartNATS).
func New(opts Options) (*Server, error) { return embedded.StartNATS(opts) }

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
