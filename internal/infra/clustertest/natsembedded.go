package clustertest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedNATSCluster is a NATS cluster with JetStream of in-process
// servers (the nats-server/v2 module, so the current server version rather
// than Debian's), on free loopback ports with routes between them and a
// store directory each under the test's temp dir. Node i's server name is
// "n<i>". Its methods are safe for concurrent use and return errors rather
// than failing the test.
//
// In-process servers cannot be killed or frozen: Shutdown stops one
// cleanly (it closes its connections and flushes its store), which is a
// gentler fault than the SIGKILL of NATSCluster.Kill.
type EmbeddedNATSCluster struct {
	*natsCommon
	dir string

	smu     sync.Mutex
	servers []*server.Server // nil while shut down
}

// StartEmbeddedNATSCluster starts the servers and waits until JetStream is
// ready (see WaitJetStreamReady).
func StartEmbeddedNATSCluster(tb testing.TB, opt NATSClusterOptions) *EmbeddedNATSCluster {
	tb.Helper()
	opt.defaults()
	ctx, cancel := context.WithTimeout(context.Background(), opt.StartTimeout)
	defer cancel()
	began := time.Now()
	common, err := newNATSCommon(opt.Nodes)
	if err != nil {
		tb.Fatal(err)
	}
	c := &EmbeddedNATSCluster{natsCommon: common, dir: tb.TempDir(), servers: make([]*server.Server, opt.Nodes)}
	tb.Cleanup(c.close)
	for attempt := 0; ; attempt++ {
		err := c.startAll()
		if err == nil {
			break
		}
		c.shutdownAll()
		if attempt == 4 {
			tb.Fatalf("clustertest: %v", err)
		}
		if err := c.newPorts(); err != nil {
			tb.Fatal(err)
		}
	}
	if err := c.WaitJetStreamReady(ctx); err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Logf("clustertest: embedded NATS cluster %s of %d nodes up in %v: %s", c.clusterName, opt.Nodes,
		time.Since(began).Round(time.Millisecond), c.URL())
	return c
}

func (c *EmbeddedNATSCluster) options(i int) (*server.Options, error) {
	var routes []*url.URL
	for j := range c.names {
		if j == i {
			continue
		}
		u, err := url.Parse(c.routeURL(j))
		if err != nil {
			return nil, fmt.Errorf("clustertest: %w", err)
		}
		routes = append(routes, u)
	}
	return &server.Options{
		ServerName: c.names[i],
		Host:       "127.0.0.1",
		Port:       c.clientPorts[i],
		JetStream:  true,
		StoreDir:   filepath.Join(c.dir, c.names[i]),
		Cluster: server.ClusterOpts{
			Name: c.clusterName,
			Host: "127.0.0.1",
			Port: c.routePorts[i],
		},
		Routes:             routes,
		JetStreamMaxMemory: 256 << 20,
		JetStreamMaxStore:  2 << 30,
		NoLog:              true,
		NoSigs:             true,
	}, nil
}

func (c *EmbeddedNATSCluster) startOne(i int) error {
	opts, err := c.options(i)
	if err != nil {
		return err
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("clustertest: embedded NATS %s: %w", c.names[i], err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return fmt.Errorf("clustertest: embedded NATS %s did not become ready on %s", c.names[i], c.clientURL(i))
	}
	c.smu.Lock()
	c.servers[i] = srv
	c.smu.Unlock()
	return nil
}

func (c *EmbeddedNATSCluster) startAll() error {
	for i := range c.names {
		// A fresh start: no JetStream state of an attempt on other ports.
		if err := os.RemoveAll(filepath.Join(c.dir, c.names[i])); err != nil {
			return fmt.Errorf("clustertest: %w", err)
		}
	}
	for i := range c.names {
		if err := c.startOne(i); err != nil {
			return err
		}
	}
	return nil
}

func (c *EmbeddedNATSCluster) shutdownAll() {
	for i := range c.names {
		_ = c.Shutdown(i)
	}
}

func (c *EmbeddedNATSCluster) close() {
	c.closeConn()
	c.shutdownAll()
}

// Server returns node i's server, nil while it is shut down.
func (c *EmbeddedNATSCluster) Server(i int) *server.Server {
	c.smu.Lock()
	defer c.smu.Unlock()
	if c.checkIndex(i) != nil {
		return nil
	}
	return c.servers[i]
}

// Shutdown stops node i and waits until it has stopped; its store stays for
// Restart. Shutting down a stopped node does nothing.
func (c *EmbeddedNATSCluster) Shutdown(i int) error {
	if err := c.checkIndex(i); err != nil {
		return err
	}
	c.smu.Lock()
	srv := c.servers[i]
	c.servers[i] = nil
	c.smu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
	return nil
}

// Restart shuts node i down if it runs and starts it again on the same
// ports and store directory, so it rejoins the cluster. It retries briefly
// while the ports are still held. Call WaitJetStreamReady to wait until
// JetStream has taken it back.
func (c *EmbeddedNATSCluster) Restart(ctx context.Context, i int) error {
	if err := c.Shutdown(i); err != nil {
		return err
	}
	for {
		err := c.startOne(i)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *EmbeddedNATSCluster) live() []int {
	c.smu.Lock()
	defer c.smu.Unlock()
	var out []int
	for i, s := range c.servers {
		if s != nil {
			out = append(out, i)
		}
	}
	return out
}

// WaitJetStreamReady waits until every running node answers JetStream API
// requests and a test stream replicated on as many of them as possible (at
// most 3) has a leader and current followers and acknowledges a publish.
func (c *EmbeddedNATSCluster) WaitJetStreamReady(ctx context.Context) error {
	return c.waitJetStreamReady(ctx, c.live)
}
