package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/pgstore"
	"github.com/eskit/eskit/internal/natstest"
	"github.com/eskit/eskit/internal/testsvc"
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
