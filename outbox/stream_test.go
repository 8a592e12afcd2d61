package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/internal/natstest"
	"github.com/eskit/eskit/outbox"
)

func TestEnsureStreamDefaultsAndIdempotence(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := natstest.Start(t)
	js := natstest.JetStream(t, srv.URL())

	s, err := outbox.EnsureStream(ctx, js, outbox.StreamConfig{})
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, "ESKIT", info.Config.Name)
	require.Equal(t, []string{"eskit.>"}, info.Config.Subjects)
	require.Equal(t, jetstream.FileStorage, info.Config.Storage)
	require.Equal(t, outbox.DefaultDuplicateWindow, info.Config.Duplicates)
	require.Equal(t, outbox.DefaultMaxAge, info.Config.MaxAge)
	require.Equal(t, 1, info.Config.Replicas)

	_, err = js.Publish(ctx, outbox.Subject("eskit", "a-1", "T"), []byte("x"))
	require.NoError(t, err)

	// Again with the same settings: nothing changes, nothing is lost.
	s, err = outbox.EnsureStream(ctx, js, outbox.StreamConfig{})
	require.NoError(t, err)
	info, err = s.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(1), info.State.Msgs)

	// Changed settings update the stream in place.
	s, err = outbox.EnsureStream(ctx, js, outbox.StreamConfig{MaxAge: time.Hour, DuplicateWindow: time.Minute, Description: "events"})
	require.NoError(t, err)
	info, err = s.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, time.Hour, info.Config.MaxAge)
	require.Equal(t, time.Minute, info.Config.Duplicates)
	require.Equal(t, "events", info.Config.Description)
	require.Equal(t, uint64(1), info.State.Msgs)

	// Forever.
	s, err = outbox.EnsureStream(ctx, js, outbox.StreamConfig{MaxAge: -1})
	require.NoError(t, err)
	info, err = s.Info(ctx)
	require.NoError(t, err)
	require.Zero(t, info.Config.MaxAge)
}

func TestStreamConfigValidate(t *testing.T) {
	t.Parallel()
	require.NoError(t, outbox.StreamConfig{}.Validate())
	require.Error(t, outbox.StreamConfig{Prefix: "a.b"}.Validate())
	require.Error(t, outbox.StreamConfig{Prefix: "a>"}.Validate())
	require.Error(t, outbox.StreamConfig{Name: "A.B"}.Validate())
	require.Error(t, outbox.StreamConfig{MaxAge: time.Minute, DuplicateWindow: time.Hour}.Validate())
}
