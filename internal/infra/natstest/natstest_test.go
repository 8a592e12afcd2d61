package natstest_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/internal/infra/natstest"
)

func TestRestartKeepsPortAndStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := natstest.Start(t)
	url := srv.URL()
	js := natstest.JetStream(t, url)
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Storage: jetstream.FileStorage})
	require.NoError(t, err)
	_, err = js.Publish(ctx, "s.1", []byte("one"))
	require.NoError(t, err)

	srv.Stop()
	require.False(t, srv.Running())
	_, err = js.Publish(ctx, "s.2", []byte("lost"))
	require.Error(t, err, "publishing while the server is down fails")

	require.NoError(t, srv.Restart())
	require.True(t, srv.Running())
	require.Equal(t, url, srv.URL())

	// The same connection reconnects; the stored message survived.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var msg *jetstream.RawStreamMsg
	for {
		s, err := js.Stream(ctx, "S")
		if err == nil {
			if msg, err = s.GetMsg(ctx, 1); err == nil {
				break
			}
		}
		require.NoError(t, ctx.Err(), "stream back after restart: %v", err)
		time.Sleep(20 * time.Millisecond)
	}
	require.Equal(t, "one", string(msg.Data))
}

func TestNewAndClose(t *testing.T) {
	t.Parallel()
	srv, err := natstest.New(natstest.Options{})
	require.NoError(t, err)
	dir := srv.Dir()
	require.DirExists(t, dir)
	nc := natstest.Connect(t, srv.URL())
	require.True(t, nc.IsConnected())
	srv.Close()
	require.NoDirExists(t, dir)
}
