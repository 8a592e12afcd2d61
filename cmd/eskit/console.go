package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/eskit/eskit/console"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/outbox"
)

// Environment variables of the console.
const (
	envConsoleToken = "ESKIT_CONSOLE_TOKEN"
	defaultConsole  = "127.0.0.1:8089"
)

// runConsole serves the operator web console on the CLI's connection
// settings until interrupted.
func runConsole(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("console", "[flags]\n\nThe operator web console: streams, the live feed, projections (retry, skip, rebuild),\nrelays, sagas and the services' health, served on -addr (loopback by default).")
	var pg pgFlags
	var rf redisFlags
	pg.register(fs)
	rf.register(fs)
	rf.pg = &pg
	natsURL := fs.String("nats-url", "", "NATS URL, for the health page (default $"+envNATSURL+"; optional)")
	addr := fs.String("addr", defaultConsole, "listen address (loopback by default: -addr :8089 listens on every interface)")
	token := fs.String("token", "", "access token (default $"+envConsoleToken+"; generated and printed when neither is set)")
	noReadModels := fs.Bool("no-readmodels", false, "show no projections (no Redis or PostgreSQL read models)")
	var relays stringList
	fs.Var(&relays, "relay", "name of a relay to show (repeatable; default "+defaultRelayName+", the name `eskit relay` runs as)")
	if err := noArgs(fs, args); err != nil {
		return err
	}
	tok := *token
	if tok == "" {
		tok = os.Getenv(envConsoleToken)
	}
	generated := false
	if tok == "" {
		var err error
		if tok, err = console.GenerateToken(); err != nil {
			return err
		}
		generated = true
	}
	if len(tok) < console.MinTokenLength {
		return usagef("the access token must have at least %d characters", console.MinTokenLength)
	}
	if len(relays) == 0 {
		relays = stringList{defaultRelayName}
	}
	log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	store, pool, err := pg.store(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	defer store.Close()
	sagas, err := pgstore.NewSagaStore(pool, pg.schema)
	if err != nil {
		return err
	}
	cfg := console.Config{
		Store: store, Sagas: sagas, Relays: relays, Token: tok, Logger: log,
		RelayStatus: func(ctx context.Context, name string) (outbox.RelayStatus, error) {
			return outbox.ReadStatus(ctx, pool, pg.schema, name)
		},
		Health: []console.Check{{Name: "postgres", Check: pool.Ping}},
	}
	if !*noReadModels {
		env, err := openProjections(ctx, &rf, &pg, true)
		if err != nil {
			return fmt.Errorf("%w (or pass -no-readmodels)", err)
		}
		defer env.close()
		cfg.Projections = env.reader
		if env.rdb != nil {
			cfg.Health = append(cfg.Health, console.Check{Name: "redis", Check: func(ctx context.Context) error { return env.rdb.Ping(ctx).Err() }})
		}
	}
	if u := cmpOr(*natsURL, os.Getenv(envNATSURL)); u != "" {
		nc, err := nats.Connect(u, append(outbox.ConnectOptions(), nats.Name("eskit-console"), nats.Timeout(5*time.Second))...)
		if err != nil {
			return fmt.Errorf("cannot reach NATS: %w", err)
		}
		defer nc.Close()
		cfg.Health = append(cfg.Health, console.Check{Name: "nats", Check: func(ctx context.Context) error {
			if st := nc.Status(); st != nats.CONNECTED {
				return fmt.Errorf("connection %s", st)
			}
			return nc.FlushWithContext(ctx)
		}})
	}
	con, err := console.New(cfg)
	if err != nil {
		return err
	}
	defer con.Close()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *addr, err)
	}
	base := "http://" + ln.Addr().String()
	if generated {
		fmt.Fprintf(c.stdout, "eskit console: %s/?token=%s\n(a generated access token: set -token or %s to keep one)\n", base, tok, envConsoleToken)
	} else {
		fmt.Fprintf(c.stdout, "eskit console: %s/ (sign in with the access token)\n", base)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	// Requests end with the console (the live feed's streams included).
	srv := &http.Server{Handler: con.Handler(), ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return runCtx },
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	go func() { _ = con.Run(runCtx) }()
	go func() {
		<-runCtx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
