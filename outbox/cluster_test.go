package outbox_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/natsevent"
	"github.com/eskit/eskit/outbox"
)

// startCluster starts a JetStream cluster of n in-process servers on
// loopback with free ports and store directories under tb's temp dir, and
// stops every one when tb ends. It returns the servers' client URLs once
// the cluster has a JetStream meta leader.
func startCluster(tb testing.TB, n int) []string {
	tb.Helper()
	dir := tb.TempDir()
	var servers []*server.Server
	tb.Cleanup(func() {
		for _, s := range servers {
			s.Shutdown()
		}
		for _, s := range servers {
			s.WaitForShutdown()
		}
	})
	// JetStream clustering needs every server's routes configured up
	// front, so the cluster ports are picked before the servers start.
	ports := make([]int, n)
	routes := make([]*url.URL, n)
	for i := range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(tb, err)
		ports[i] = l.Addr().(*net.TCPAddr).Port
		require.NoError(tb, l.Close())
		routes[i] = &url.URL{Scheme: "nats", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[i]))}
	}
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		s, err := server.NewServer(&server.Options{
			ServerName: name,
			Host:       "127.0.0.1",
			Port:       server.RANDOM_PORT,
			JetStream:  true,
			StoreDir:   filepath.Join(dir, name),
			Cluster:    server.ClusterOpts{Name: "eskit", Host: "127.0.0.1", Port: ports[i]},
			Routes:     routes,
			NoLog:      true,
			NoSigs:     true,
		})
		require.NoError(tb, err)
		servers = append(servers, s)
		go s.Start()
		require.True(tb, s.ReadyForConnections(10*time.Second), "server %s did not start", name)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		leader, peers := false, 0
		for _, s := range servers {
			leader = leader || s.JetStreamIsLeader()
			if s.JetStreamIsCurrent() {
				peers++
			}
		}
		if leader && peers == n {
			break
		}
		require.True(tb, time.Now().Before(deadline), "the cluster elected no JetStream meta leader")
		time.Sleep(50 * time.Millisecond)
	}
	urls := make([]string, n)
	for i, s := range servers {
		urls[i] = s.ClientURL()
	}
	return urls
}

// TestEnsureStreamClusterKeepsReplicas runs on a 3-node cluster: a stream
// an operator raised to three replicas stays at three when a relay asks for
// one, and a relay that asks for three raises a one-replica stream.
func TestEnsureStreamClusterKeepsReplicas(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	urls := startCluster(t, 3)
	nc, err := nats.Connect(strings.Join(urls, ","), outbox.ConnectOptions()...)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)

	// The relay creates its stream with one replica; the operator raises it.
	s, err := outbox.EnsureStream(ctx, js, outbox.StreamConfig{Prefix: "bank", Replicas: 1})
	require.NoError(t, err)
	require.Equal(t, 1, s.CachedInfo().Config.Replicas)
	sc := s.CachedInfo().Config
	sc.Replicas = 3
	_, err = js.UpdateStream(ctx, sc)
	require.NoError(t, err)
	waitReplicas(t, ctx, js, "BANK", 3)
	_, err = js.Publish(ctx, natsevent.Subject("bank", "account-1", "Opened"), []byte("{}"))
	require.NoError(t, err)

	// The relay restarts with -replicas 1: the stream stays R3, and
	// nothing is written.
	counter := &writeCounter{JetStream: js}
	s, err = outbox.EnsureStream(ctx, counter, outbox.StreamConfig{Prefix: "bank", Replicas: 1})
	require.NoError(t, err)
	require.Zero(t, counter.updates.Load()+counter.creates.Load())
	info, err := s.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, 3, info.Config.Replicas)
	require.Len(t, info.Cluster.Replicas, 2, "a leader and two replicas")
	require.Equal(t, uint64(1), info.State.Msgs)

	// A relay that asks for three replicas raises a one-replica stream.
	s, err = outbox.EnsureStream(ctx, js, outbox.StreamConfig{Prefix: "audit"})
	require.NoError(t, err)
	require.Equal(t, 1, s.CachedInfo().Config.Replicas)
	s, err = outbox.EnsureStream(ctx, js, outbox.StreamConfig{Prefix: "audit", Replicas: 3})
	require.NoError(t, err)
	info, err = s.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, 3, info.Config.Replicas)
	waitReplicas(t, ctx, js, "AUDIT", 3)
}

// waitReplicas waits until a stream has a leader and n-1 current replicas.
func waitReplicas(t *testing.T, ctx context.Context, js jetstream.JetStream, stream string, n int) {
	t.Helper()
	for {
		s, err := js.Stream(ctx, stream)
		require.NoError(t, err)
		if c := s.CachedInfo().Cluster; c != nil && c.Leader != "" && len(c.Replicas) == n-1 &&
			!slices.ContainsFunc(c.Replicas, func(p *jetstream.PeerInfo) bool { return !p.Current }) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("stream %s did not get %d current replicas: %v", stream, n, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
