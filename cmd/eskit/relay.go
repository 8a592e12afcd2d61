package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eskit/eskit/internal/redact"
	"github.com/eskit/eskit/natsevent"
	"github.com/eskit/eskit/outbox"
)

// natsFlags are the flags of every command that talks to NATS.
type natsFlags struct{ url string }

func (n *natsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&n.url, "nats-url", "", "NATS server URL (default $"+envNATSURL+"; one of them is required)")
}

// connURL is the NATS URL: -nats-url or ESKIT_NATS_URL.
func (n *natsFlags) connURL() (string, error) {
	return serviceURL("NATS", n.url, "nats-url", envNATSURL)
}

// connect connects with the relay's connection options and reports an
// unreachable server clearly.
func (n *natsFlags) connect(name string) (*nats.Conn, jetstream.JetStream, error) {
	url, err := n.connURL()
	if err != nil {
		return nil, nil, err
	}
	opts := append(outbox.ConnectOptions(), nats.Name(name), nats.Timeout(5*time.Second))
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot reach NATS at %s: %w", redact.URLs(url), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("NATS JetStream: %w", err)
	}
	return nc, js, nil
}

// defaultRelayName is the name `eskit relay` runs under without -name, and
// the relay `eskit relay status` shows without names.
const defaultRelayName = "relay"

func runRelay(ctx context.Context, c *cli, args []string) error {
	if len(args) > 0 && args[0] == "status" {
		return relayStatus(ctx, c, args[1:])
	}
	fs := c.flagSet("relay", "[flags]\n       eskit relay status [name...] [flags]   (the relay's state: see `eskit relay status -h`)")
	var pg pgFlags
	var nf natsFlags
	pg.register(fs)
	nf.register(fs)
	name := fs.String("name", defaultRelayName, "relay name: relays of one name share a checkpoint, and one of them leads")
	prefix := fs.String("prefix", natsevent.DefaultPrefix, "subject prefix")
	stream := fs.String("stream", "", "JetStream stream name (default: the prefix, upper-cased)")
	replicas := fs.Int("replicas", 1, "stream replicas in a NATS cluster: applies when the stream is created, or raises an existing stream with fewer; never lowers one")
	dupWindow := fs.Duration("duplicate-window", outbox.DefaultDuplicateWindow, "JetStream duplicate window (at least; a longer existing one stays)")
	maxAge := fs.Duration("max-age", outbox.DefaultMaxAge, "how long JetStream keeps messages, at least (negative: forever; a longer existing one stays)")
	statsEvery := fs.Duration("stats-interval", 10*time.Second, "how often to log progress (0: never)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) > 0 && pos[0] == "status":
		return usagef("`status` comes right after `relay`: eskit relay status [name...] [flags]")
	case len(pos) > 0:
		return usagef("unexpected argument %q (the relay takes flags only)", pos[0])
	}
	if err := natsevent.ValidatePrefix(*prefix); err != nil {
		return &usageError{msg: err.Error()}
	}
	// Both services must be named before either is connected to.
	if _, err := pg.connURL(); err != nil {
		return err
	}
	if _, err := nf.connURL(); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(c.stderr, nil))
	store, pool, err := pg.store(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	defer store.Close()
	nc, js, err := nf.connect("eskit relay " + *name)
	if err != nil {
		return err
	}
	defer nc.Close()
	cfg := outbox.StreamConfig{Name: *stream, Prefix: *prefix, Replicas: *replicas, DuplicateWindow: *dupWindow, MaxAge: *maxAge}
	if _, err := outbox.EnsureStream(ctx, js, cfg); err != nil {
		return err
	}
	relay, err := outbox.NewRelay(store, pool, js,
		outbox.WithSchema(pg.schema), outbox.WithName(*name), outbox.WithPrefix(*prefix), outbox.WithLogger(log))
	if err != nil {
		return err
	}
	log.Info("relay starting", "name", *name, "nats", nc.ConnectedUrlRedacted(), "server", nc.ConnectedServerVersion(), "prefix", *prefix)
	if *statsEvery > 0 {
		go func() {
			t := time.NewTicker(*statsEvery)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					st := relay.Stats()
					log.Info("relay progress", "leader", st.Leader, "published", st.Published, "position", st.Position,
						"lag_events", st.LagEvents, "lag", st.Lag, "last_error", st.LastError)
				}
			}
		}()
	}
	if err := relay.Run(ctx); err != nil { // nil once ctx ends
		return err
	}
	log.Info("relay stopped")
	return nil
}
