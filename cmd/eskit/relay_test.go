package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/internal/infra/natstest"
	"github.com/eskit/eskit/internal/infra/testsvc"
)

func TestRelayCommand(t *testing.T) {
	url := testsvc.Database(t)
	srv := natstest.Start(t)
	code, _, errOut := eskit(t, "migrate", "-postgres-url", url)
	require.Equal(t, 0, code, errOut)

	ctx := context.Background()
	pool := testsvc.PoolFor(t, url)
	store, err := pgstore.New(ctx, pool)
	require.NoError(t, err)
	t.Cleanup(store.Close)
	for i := range 5 {
		_, err := store.Append(ctx, "account-"+string(rune('a'+i)), eventstore.NoStream,
			eventstore.Event{Type: "Opened", Data: []byte(`{}`)})
		require.NoError(t, err)
	}

	rctx, cancel := context.WithCancel(ctx)
	done := make(chan int, 1)
	var out, errBuf bytes.Buffer
	go func() {
		done <- run(rctx, []string{"relay", "-postgres-url", url, "-nats-url", srv.URL(), "-prefix", "bank"}, &out, &errBuf)
	}()
	js := natstest.JetStream(t, srv.URL())
	require.Eventually(t, func() bool {
		s, err := js.Stream(ctx, "BANK")
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs == 5
	}, 20*time.Second, 20*time.Millisecond)
	cancel()
	require.Equal(t, 0, <-done, errBuf.String())
	require.Contains(t, errBuf.String(), "relay starting")

	// An unreachable broker is a clear error and a non-zero exit.
	code, _, errOut = eskit(t, "relay", "-postgres-url", url, "-nats-url", "nats://127.0.0.1:1")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "cannot reach NATS")
}

// TestRelayCommandStream: the relay never lowers what an operator set on
// its stream, and refuses a stream it cannot work with, naming the stream
// and the setting.
func TestRelayCommandStream(t *testing.T) {
	url := testsvc.Database(t)
	srv := natstest.Start(t)
	code, _, errOut := eskit(t, "migrate", "-postgres-url", url)
	require.Equal(t, 0, code, errOut)
	ctx := context.Background()
	js := natstest.JetStream(t, srv.URL())

	// An operator keeps 30 days and a longer duplicate window; the relay
	// asks for less.
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "BANK", Subjects: []string{"bank.>"}, MaxAge: 30 * 24 * time.Hour, Duplicates: 10 * time.Minute,
	})
	require.NoError(t, err)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan int, 1)
	var out, errBuf lockedBuffer
	go func() {
		done <- run(rctx, []string{"relay", "-postgres-url", url, "-nats-url", srv.URL(), "-prefix", "bank",
			"-replicas", "1", "-max-age", "1h", "-duplicate-window", "1m"}, &out, &errBuf)
	}()
	require.Eventually(t, func() bool { return strings.Contains(errBuf.String(), "relay starting") }, 20*time.Second, 20*time.Millisecond)
	cancel()
	require.Equal(t, 0, <-done, errBuf.String())
	s, err := js.Stream(ctx, "BANK")
	require.NoError(t, err)
	require.Equal(t, 30*24*time.Hour, s.CachedInfo().Config.MaxAge)
	require.Equal(t, 10*time.Minute, s.CachedInfo().Config.Duplicates)

	// An interest-retention stream is refused before the relay starts.
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "SHOP", Subjects: []string{"shop.>"}, Retention: jetstream.InterestPolicy})
	require.NoError(t, err)
	code, _, errOut = eskit(t, "relay", "-postgres-url", url, "-nats-url", srv.URL(), "-prefix", "shop")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "stream SHOP: retention is Interest, eskit needs Limits")
	require.NotContains(t, errOut, "relay starting")

	// The help says what -replicas does to an existing stream.
	code, _, errOut = eskit(t, "relay", "-h")
	require.Equal(t, 0, code)
	require.Contains(t, errOut, "never lowers")
}

// lockedBuffer is a bytes.Buffer that a running command writes to while
// the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
