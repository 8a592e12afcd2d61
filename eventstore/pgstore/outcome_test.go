package pgstore_test

import (
	"context"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eskit/eskit/internal/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore/pgtest"
)

// cutProxy forwards TCP connections to PostgreSQL. Once armed, it forwards
// the next request to the server, lets the server answer, and then closes
// the client's connection without passing the answer on: the client cannot
// know whether its write was committed.
type cutProxy struct {
	ln     net.Listener
	target string
	armed  atomic.Bool
	cut    chan struct{}
	wg     sync.WaitGroup
}

func startCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &cutProxy{ln: ln, target: target, cut: make(chan struct{}, 1)}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() { p.serve(c) })
		}
	})
	t.Cleanup(func() { _ = ln.Close(); p.wg.Wait() })
	return p
}

func (p *cutProxy) serve(client net.Conn) {
	defer client.Close()
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer server.Close()
	var dropAnswers atomic.Bool
	done := make(chan struct{})
	go func() { // server -> client
		defer close(done)
		defer client.Close() // the server hung up: so does the client's side
		buf := make([]byte, 64<<10)
		for {
			n, err := server.Read(buf)
			if n > 0 && !dropAnswers.Load() {
				if _, werr := client.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := client.Read(buf)
		if n > 0 {
			if p.armed.CompareAndSwap(true, false) {
				// The request goes on to the server (in as many writes as
				// the client makes); its answers are dropped, and the
				// client's connection is closed once the server had the
				// time to commit.
				dropAnswers.Store(true)
				time.AfterFunc(300*time.Millisecond, func() {
					_ = client.Close()
					p.cut <- struct{}{}
				})
			}
			if _, werr := server.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// A connection that breaks while an append is committed: the store says
// the outcome is unknown (never an internal error), the write was in fact
// applied, and retrying the same append is recognised as a repeat.
func TestAppendOutcomeUnknownWhenTheConnectionBreaksDuringCommit(t *testing.T) {
	ctx := context.Background()
	dbURL := pgtest.Database(t)
	direct := newStoreOn(t, pgtest.PoolFor(t, dbURL))

	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	proxy := startCutProxy(t, u.Host)
	u.Host = proxy.ln.Addr().String()
	cfg, err := pgxpool.ParseConfig(u.String())
	require.NoError(t, err)
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	s := newStoreOn(t, pool)

	for _, tc := range []struct {
		name    string
		appends func(suffix string) []eventstore.StreamAppend
	}{
		{"one stream", func(suffix string) []eventstore.StreamAppend {
			return []eventstore.StreamAppend{{StreamID: "acct-1" + suffix, Expected: eventstore.Any, Events: evs(2, "a")}}
		}},
		{"several streams", func(suffix string) []eventstore.StreamAppend {
			return []eventstore.StreamAppend{
				{StreamID: "acct-2" + suffix, Expected: eventstore.Any, Events: evs(1, "b")},
				{StreamID: "acct-3" + suffix, Expected: eventstore.Any, Events: evs(1, "c")},
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The same kind of append first: the pool's connection is open
			// and its statements are prepared, so the next request is the
			// write itself.
			_, err := s.AppendMulti(ctx, tc.appends("-warm")...)
			require.NoError(t, err)
			// The store's post-commit wake-up (a NOTIFY on a connection of
			// the pool) is sent shortly after the commit: let it pass
			// before the proxy waits for the next request.
			time.Sleep(100 * time.Millisecond)
			appends := tc.appends("")
			proxy.armed.Store(true)
			_, err = s.AppendMulti(ctx, appends...)
			<-proxy.cut
			require.ErrorIs(t, err, eventstore.ErrOutcomeUnknown, "got %v", err)
			require.False(t, eventstore.IsRetryable(err))

			// It was applied...
			for _, a := range appends {
				v, err := direct.StreamVersion(ctx, a.StreamID)
				require.NoError(t, err)
				require.Equal(t, int64(len(a.Events)), v)
			}
			// ... and the retry with the same events is a repeat.
			res, err := s.AppendMulti(ctx, appends...)
			require.NoError(t, err)
			require.True(t, res.Duplicate)
		})
	}
}

// A session the server ends (pg_terminate_backend, a shutdown) under a
// read is a transient failure, which callers retry: nothing was written.
// Under an append it is an unknown outcome, never a plain error.
func TestTerminatedSessionIsTransientForReadsAndUnknownForWrites(t *testing.T) {
	ctx := context.Background()
	dbURL := pgtest.Database(t)
	admin := pgtest.PoolFor(t, dbURL)
	cfg, err := pgxpool.ParseConfig(dbURL)
	require.NoError(t, err)
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	s := newStoreOn(t, pool)
	_, err = s.Append(ctx, "acct-1", eventstore.NoStream, evs(2, "a")...)
	require.NoError(t, err)

	// terminate ends the pool's one session; its next request reads the
	// server's FATAL.
	terminate := func() {
		t.Helper()
		var pid int
		require.NoError(t, pool.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
		var ok bool
		require.NoError(t, admin.QueryRow(ctx, `SELECT pg_terminate_backend($1)`, pid).Scan(&ok))
		require.True(t, ok)
		time.Sleep(50 * time.Millisecond)
	}

	terminate()
	_, err = eventstore.Collect(s.ReadStream(ctx, "acct-1", 1))
	require.ErrorIs(t, err, eventstore.ErrTransient)
	recs, err := eventstore.Collect(s.ReadStream(ctx, "acct-1", 1))
	require.NoError(t, err, "the pool reconnects")
	require.Len(t, recs, 2)

	terminate()
	_, err = s.Append(ctx, "acct-1", eventstore.Any, evs(1, "b")...)
	require.ErrorIs(t, err, eventstore.ErrOutcomeUnknown)
}
