package outbox

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream defaults.
const (
	// DefaultDuplicateWindow is how long JetStream remembers message IDs for
	// de-duplication. A relay that fails over or retries within it produces
	// no visible duplicates.
	DefaultDuplicateWindow = 2 * time.Minute
	// DefaultMaxAge is how long the stream keeps messages. The event store
	// stays the source of truth: projections rebuild from its feed.
	DefaultMaxAge = 7 * 24 * time.Hour
)

// StreamConfig describes the JetStream stream the relay publishes to. Zero
// fields take defaults (see EnsureStream).
type StreamConfig struct {
	// Name is the stream's name; default: the prefix, upper-cased.
	Name string
	// Prefix is the subject prefix; the stream captures "<prefix>.>".
	// Default DefaultPrefix.
	Prefix string
	// Description is free text shown by tools.
	Description string
	// Storage is file (default) or memory storage.
	Storage jetstream.StorageType
	// Replicas is the number of replicas in a cluster; default 1.
	Replicas int
	// DuplicateWindow is the de-duplication window; default
	// DefaultDuplicateWindow.
	DuplicateWindow time.Duration
	// MaxAge is how long messages are kept; default DefaultMaxAge, negative
	// means forever.
	MaxAge time.Duration
	// MaxBytes limits the stream's size; zero or negative means no limit.
	MaxBytes int64

	// Compression compresses stored messages (server 2.10 or newer).
	Compression jetstream.StoreCompression
	// Metadata is stored with the stream (server 2.10 or newer).
	Metadata map[string]string
	// AllowMsgTTL lets messages carry their own TTL (server 2.11 or newer).
	AllowMsgTTL bool
}

// WithDefaults returns c with its zero fields set to the defaults.
func (c StreamConfig) WithDefaults() StreamConfig {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Name == "" {
		c.Name = strings.ToUpper(c.Prefix)
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.DuplicateWindow <= 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	if c.MaxAge == 0 {
		c.MaxAge = DefaultMaxAge
	}
	return c
}

// Features returns the server features the configuration needs.
func (c StreamConfig) Features() []Feature {
	fs := []Feature{FeatureJetStream}
	if c.Compression != jetstream.NoCompression {
		fs = append(fs, FeatureCompression)
	}
	if len(c.Metadata) > 0 {
		fs = append(fs, FeatureStreamMetadata)
	}
	if c.AllowMsgTTL {
		fs = append(fs, FeatureMsgTTL)
	}
	return fs
}

// Validate checks the configuration (after defaults) without a server.
func (c StreamConfig) Validate() error {
	c = c.WithDefaults()
	if err := ValidatePrefix(c.Prefix); err != nil {
		return err
	}
	if strings.ContainsAny(c.Name, " \t\r\n.*>/\\") {
		return fmt.Errorf("outbox: stream name %q: must not contain whitespace, '.', '*', '>', '/' or '\\'", c.Name)
	}
	if c.MaxAge > 0 && c.DuplicateWindow > c.MaxAge {
		return fmt.Errorf("outbox: duplicate window %s exceeds max age %s", c.DuplicateWindow, c.MaxAge)
	}
	return nil
}

// Check validates the configuration and checks that a server of the given
// version supports every feature it uses.
func (c StreamConfig) Check(serverVersion string) error {
	if err := c.Validate(); err != nil {
		return err
	}
	return CheckServer(serverVersion, c.Features()...)
}

// JetStreamConfig returns the jetstream stream configuration for c (after
// defaults).
func (c StreamConfig) JetStreamConfig() jetstream.StreamConfig {
	c = c.WithDefaults()
	sc := jetstream.StreamConfig{
		Name:              c.Name,
		Description:       c.Description,
		Subjects:          []string{c.Prefix + ".>"},
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		Storage:           c.Storage,
		Replicas:          c.Replicas,
		Duplicates:        c.DuplicateWindow,
		MaxMsgs:           -1,
		MaxBytes:          -1,
		MaxConsumers:      -1,
		MaxMsgsPerSubject: -1,
		Compression:       c.Compression,
		Metadata:          c.Metadata,
		AllowMsgTTL:       c.AllowMsgTTL,
	}
	if c.MaxAge > 0 {
		sc.MaxAge = c.MaxAge
	}
	if c.MaxBytes > 0 {
		sc.MaxBytes = c.MaxBytes
	}
	return sc
}

// EnsureStream creates the relay's stream or updates it to cfg; it is
// idempotent. It first checks the connected server's version and refuses
// (with an error matching ErrUnsupported) settings the server is too old
// for, since older servers silently ignore them.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	version, err := serverVersion(ctx, js)
	if err != nil {
		return nil, err
	}
	if err := cfg.Check(version); err != nil {
		return nil, err
	}
	sc := cfg.JetStreamConfig()
	s, err := js.CreateOrUpdateStream(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("outbox: create or update stream %s: %w", sc.Name, err)
	}
	return s, nil
}

// serverVersion returns the version of the server js is connected to,
// waiting (until ctx ends) while the connection is reconnecting.
func serverVersion(ctx context.Context, js jetstream.JetStream) (string, error) {
	nc := js.Conn()
	if nc == nil {
		return "", errors.New("outbox: JetStream context has no NATS connection")
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if v := nc.ConnectedServerVersion(); v != "" {
			return v, nil
		}
		if nc.IsClosed() {
			return "", errors.New("outbox: NATS connection is closed")
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("outbox: waiting for the NATS connection: %w", ctx.Err())
		case <-t.C:
		}
	}
}
