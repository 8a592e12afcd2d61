// Package embedded runs, inside the process, the servers the sample bank
// and the CLI's benchmarks use when no real services are configured: a
// NATS server with JetStream (StartNATS) and a Redis-compatible server
// (StartRedis, on miniredis). It does not import testing: it is on
// production paths.
package embedded

import (
	"fmt"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// clockTick is how often the embedded Redis moves its clock.
const clockTick = 50 * time.Millisecond

// Redis is an in-process Redis-compatible server. It speaks enough of Redis
// for eskit: MULTI/EXEC and WATCH, Lua scripts (EVAL, EVALSHA), SET NX PX,
// SCAN and UNLINK, hashes, lists and sorted sets. Unlike plain miniredis,
// its keys expire with the wall clock, so leases and idempotency claims
// time out as they do on a real server.
type Redis struct {
	m    *miniredis.Miniredis
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// StartRedis starts a server on addr ("" or "127.0.0.1:0" picks a free
// loopback port). Close it when done.
func StartRedis(addr string) (*Redis, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr(addr); err != nil {
		return nil, fmt.Errorf("embedded: start redis on %s: %w", addr, err)
	}
	r := &Redis{m: m, stop: make(chan struct{}), done: make(chan struct{})}
	go r.clock()
	return r, nil
}

// clock moves the server's TTLs forward with real time: miniredis only
// expires keys when told to.
func (r *Redis) clock() {
	defer close(r.done)
	t := time.NewTicker(clockTick)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-r.stop:
			return
		case now := <-t.C:
			r.m.FastForward(now.Sub(last))
			r.m.SetTime(now)
			last = now
		}
	}
}

// Addr returns the server's host:port.
func (r *Redis) Addr() string { return r.m.Addr() }

// URL returns the server's redis:// URL.
func (r *Redis) URL() string { return "redis://" + r.m.Addr() + "/0" }

// Close stops the server; its data is gone.
func (r *Redis) Close() {
	r.once.Do(func() {
		close(r.stop)
		<-r.done
		r.m.Close()
	})
}
