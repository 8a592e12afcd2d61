package outbox_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/eventstore/memstore"
	"github.com/eskit/eskit/internal/infra/natstest"
	"github.com/eskit/eskit/natsevent"
	"github.com/eskit/eskit/outbox"
)

func TestParseServerVersion(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]natsevent.ServerVersion{
		"2.9.10":      {Major: 2, Minor: 9, Patch: 10},
		"v2.11.0":     {Major: 2, Minor: 11, Patch: 0},
		"2.12.0-RC.2": {Major: 2, Minor: 12, Patch: 0},
		" 2.10.3 ":    {Major: 2, Minor: 10, Patch: 3},
	} {
		got, err := natsevent.ParseServerVersion(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, bad := range []string{"", "2.9", "2.x.1", "two", "2.9.-1"} {
		_, err := natsevent.ParseServerVersion(bad)
		require.Error(t, err, bad)
	}
}

func TestCheckServerFakeVersions(t *testing.T) {
	t.Parallel()
	require.NoError(t, natsevent.CheckServer("2.9.10", natsevent.FeatureJetStream))
	require.NoError(t, natsevent.CheckServer("2.11.0", natsevent.FeatureMsgTTL, natsevent.FeatureCompression))

	err := natsevent.CheckServer("2.9.10", natsevent.FeatureJetStream, natsevent.FeatureCompression, natsevent.FeatureMsgTTL)
	require.ErrorIs(t, err, natsevent.ErrUnsupported)
	var ue *natsevent.UnsupportedError
	require.ErrorAs(t, err, &ue)
	require.Equal(t, []natsevent.Feature{natsevent.FeatureCompression, natsevent.FeatureMsgTTL}, ue.Missing)
	require.Contains(t, err.Error(), "2.9.10")
	require.Contains(t, err.Error(), "needs 2.11.0")

	require.ErrorIs(t, natsevent.CheckServer("2.10.99", natsevent.FeatureMsgTTL), natsevent.ErrUnsupported)
	require.ErrorIs(t, natsevent.CheckServer("2.1.0", natsevent.FeatureJetStream), natsevent.ErrUnsupported)
	require.ErrorIs(t, natsevent.CheckServer("garbage", natsevent.FeatureJetStream), natsevent.ErrUnsupported)
	require.ErrorIs(t, natsevent.CheckServer("99.0.0", natsevent.Feature(1000)), natsevent.ErrUnsupported)

	// Stream settings are checked against the version, not left to the
	// server.
	cfg := outbox.StreamConfig{Compression: jetstream.S2Compression}
	require.ErrorIs(t, cfg.Check("2.9.10"), natsevent.ErrUnsupported)
	require.NoError(t, cfg.Check("2.10.0"))
	cfg = outbox.StreamConfig{AllowMsgTTL: true}
	require.ErrorIs(t, cfg.Check("2.10.7"), natsevent.ErrUnsupported)
	require.NoError(t, cfg.Check("2.11.1"))
	cfg = outbox.StreamConfig{Metadata: map[string]string{"a": "b"}}
	require.ErrorIs(t, cfg.Check("2.9.10"), natsevent.ErrUnsupported)
	require.NoError(t, outbox.StreamConfig{}.Check("2.9.10"))

	// Consumers with several filter subjects need 2.10.
	require.ErrorIs(t, natsevent.CheckServer("2.9.10", natsevent.FeatureMultiFilter), natsevent.ErrUnsupported)
	require.NoError(t, natsevent.CheckServer("2.10.0", natsevent.FeatureMultiFilter))
	require.Contains(t, natsevent.CheckServer("2.9.10", natsevent.FeatureMultiFilter).Error(), "FilterSubjects")
}

// TestCheckJetStream asks the connected server (in-process, and
// ESKIT_NATS_URL when set) whether it supports consumers with several
// filter subjects, and checks the answer against what the server does with
// such a consumer: a server that supports them delivers only the filtered
// subjects; an older one ignores FilterSubjects and creates a consumer of
// the whole stream (nats.go then fails with
// ErrConsumerMultipleFilterSubjectsNotSupported, but the consumer stays),
// which is why the check must come before creating the consumer.
func TestCheckJetStream(t *testing.T) {
	t.Parallel()
	t.Run("embedded", func(t *testing.T) {
		t.Parallel()
		b := newBroker(t)
		require.NoError(t, natsevent.CheckJetStream(context.Background(), b.js, natsevent.FeatureJetStream, natsevent.FeatureMultiFilter))
		checkMultiFilter(t, b, true)
	})
	t.Run("external", func(t *testing.T) {
		t.Parallel()
		b := externalBroker(t)
		err := natsevent.CheckJetStream(context.Background(), b.js, natsevent.FeatureMultiFilter)
		v, perr := natsevent.ParseServerVersion(b.js.Conn().ConnectedServerVersion())
		require.NoError(t, perr)
		if v.AtLeast(natsevent.ServerVersion{Major: 2, Minor: 10}) {
			require.NoError(t, err)
		} else {
			require.ErrorIs(t, err, natsevent.ErrUnsupported)
		}
		checkMultiFilter(t, b, err == nil)
	})
	t.Run("closed", func(t *testing.T) {
		t.Parallel()
		srv := natstest.Start(t)
		js := natstest.JetStream(t, srv.URL())
		js.Conn().Close()
		err := natsevent.CheckJetStream(context.Background(), js, natsevent.FeatureJetStream)
		require.Error(t, err)
		require.NotErrorIs(t, err, natsevent.ErrUnsupported)
	})
}

// checkMultiFilter publishes one event to each of two partitions and reads
// partition 0 of 2 with a consumer of PartitionFilters: filtered says
// whether the server is expected to honour FilterSubjects. An older server
// ignores the field and creates a consumer of the whole stream; nats.go
// notices and fails, but the consumer is left behind on the server.
func checkMultiFilter(t *testing.T, b *broker, filtered bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	streams := map[int]string{}
	for i := 0; len(streams) < 2; i++ {
		id := fmt.Sprintf("account-%d", i)
		if _, ok := streams[eventstore.StreamPartition(id, 2)]; !ok {
			streams[eventstore.StreamPartition(id, 2)] = id
		}
	}
	for _, id := range []string{streams[0], streams[1]} {
		_, err := b.js.Publish(ctx, natsevent.Subject(b.prefix, id, "Opened"), []byte("{}"))
		require.NoError(t, err)
	}
	fs, err := natsevent.PartitionFilters(b.prefix, 0, 2)
	require.NoError(t, err)
	const name = "multifilter"
	c, err := b.js.CreateConsumer(ctx, b.stream, jetstream.ConsumerConfig{
		Name: name, AckPolicy: jetstream.AckNonePolicy, FilterSubjects: fs, InactiveThreshold: time.Minute,
	})
	want := []string{streams[0]}
	if !filtered {
		require.ErrorIs(t, err, jetstream.ErrConsumerMultipleFilterSubjectsNotSupported)
		c, err = b.js.Consumer(ctx, b.stream, name)
		require.NoError(t, err, "the server created the consumer anyway")
		require.Empty(t, c.CachedInfo().Config.FilterSubjects)
		require.Empty(t, c.CachedInfo().Config.FilterSubject)
		want = []string{streams[0], streams[1]}
	}
	require.NoError(t, err)
	batch, err := c.Fetch(10, jetstream.FetchMaxWait(time.Second))
	require.NoError(t, err)
	var got []string
	for m := range batch.Messages() {
		p, err := natsevent.ParseSubject(m.Subject())
		require.NoError(t, err)
		got = append(got, p.StreamID)
	}
	require.NoError(t, batch.Error())
	require.Equal(t, want, got, "FilterSubjects honoured: %v", filtered)
}

// TestVersionGateExternal runs against ESKIT_NATS_URL; on the 2.9 server
// this machine has, newer features are refused before reaching the server.
func TestVersionGateExternal(t *testing.T) {
	t.Parallel()
	url, ok := natstest.ExternalURL()
	if !ok {
		t.Skipf("%s is not set", natstest.EnvURL)
	}
	ctx := context.Background()
	js := natstest.JetStream(t, url)
	version := js.Conn().ConnectedServerVersion()
	v, err := natsevent.ParseServerVersion(version)
	require.NoError(t, err)
	if v.AtLeast(natsevent.FeatureMsgTTL.Since()) {
		t.Skipf("server %s supports every gated feature", version)
	}
	_, err = outbox.EnsureStream(ctx, js, outbox.StreamConfig{Prefix: "eskitgate", AllowMsgTTL: true})
	require.ErrorIs(t, err, natsevent.ErrUnsupported)
	_, err = js.Stream(ctx, "ESKITGATE")
	require.ErrorIs(t, err, jetstream.ErrStreamNotFound, "a refused stream must not be created")

	r, err := outbox.NewRelay(memstore.New(), newDB(t), js, outbox.WithMessageTTL(time.Hour))
	require.NoError(t, err)
	err = r.Run(ctx)
	require.ErrorIs(t, err, natsevent.ErrUnsupported)
	require.Contains(t, err.Error(), version)
}

// TestEmbeddedServerSupportsNewFeatures checks the gate lets a current
// server use what it supports.
func TestEmbeddedServerSupportsNewFeatures(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := natstest.Start(t)
	js := natstest.JetStream(t, srv.URL())
	s, err := outbox.EnsureStream(ctx, js, outbox.StreamConfig{
		Prefix: "ttl", Compression: jetstream.S2Compression, AllowMsgTTL: true,
		Metadata: map[string]string{"owner": "eskit"},
	})
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, jetstream.S2Compression, info.Config.Compression)
	require.True(t, info.Config.AllowMsgTTL)
	require.Equal(t, "eskit", info.Config.Metadata["owner"])
}
