package outbox

import (
	"time"

	"github.com/nats-io/nats.go"
)

// ConnectOptions are the NATS connection options a relay needs: reconnect
// forever and quickly, and fail publishes while disconnected instead of
// buffering them (a buffered publish would reach the server after the
// relay's retries of earlier messages and could be stored out of order).
// Append your own options (name, credentials, TLS) after them.
func ConnectOptions() []nats.Option {
	return []nats.Option{
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50 * time.Millisecond),
		nats.ReconnectBufSize(-1),
		nats.RetryOnFailedConnect(false),
	}
}
