package redislease_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/internal/infra/clustertest"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/lease"
	"github.com/eskit/eskit/lease/leasetest"
	"github.com/eskit/eskit/lease/redislease"
)

func newStore(t *testing.T, rdb redis.UniversalClient, prefix string) *redislease.Store {
	t.Helper()
	s, err := redislease.New(rdb, redislease.WithPrefix(prefix))
	if err != nil {
		t.Fatalf("redislease.New: %v", err)
	}
	return s
}

// The Redis lease store keeps the lease.Store contract, each test under a
// key prefix of its own (deleted when it ends).
func TestStore(t *testing.T) {
	leasetest.Run(t, func(t *testing.T) lease.Store {
		rdb, prefix := testsvc.Redis(t)
		return newStore(t, rdb, prefix)
	})
}

// On a Redis Cluster too: each lease is one key, and a guarded script's
// keys share its slot.
func TestClusterLeases(t *testing.T) {
	c := clustertest.StartRedisCluster(t, clustertest.RedisClusterOptions{})
	rdb := c.Client(t)
	leasetest.Run(t, func(t *testing.T) lease.Store { return newStore(t, rdb, "cl") })
	s := newStore(t, rdb, "cl")
	for _, name := range []string{"a", "b/{x}", "}c", "%7Bd"} {
		l, err := s.Acquire(t.Context(), name, "h", time.Minute)
		if err != nil {
			t.Fatalf("Acquire(%q): %v", name, err)
		}
		key := s.Prefix() + "data:" + redislease.HashTag(name)
		if clustertest.KeySlot(key) != clustertest.KeySlot(s.Key(name)) {
			t.Fatalf("%q: %s and %s in different slots", name, key, s.Key(name))
		}
		g := s.Guard(`return redis.call('SET', KEYS[1], ARGV[1])`)
		if err := g.Run(t.Context(), l, []string{key}, "v").Err(); err != nil {
			t.Fatalf("guarded write of %q: %v", name, err)
		}
	}
}

func TestKeys(t *testing.T) {
	rdb, prefix := testsvc.Redis(t)
	for p, want := range map[string]string{"bank": "bank:", "bank:": "bank:", "app/": "app/", "": ""} {
		s := newStore(t, rdb, p)
		if s.Prefix() != want || s.Key("n:1") != want+"lease:{n:1}" {
			t.Errorf("prefix %q: %q, key %q", p, s.Prefix(), s.Key("n:1"))
		}
	}
	if got := redislease.HashTag("a{b}%c"); got != "{a%7Bb%7D%25c}" {
		t.Errorf("HashTag = %q", got)
	}
	for _, bad := range []string{"{x}", "a}"} {
		if _, err := redislease.New(rdb, redislease.WithPrefix(bad)); !errors.Is(err, lease.ErrInvalidArgument) {
			t.Errorf("prefix %q: %v, want ErrInvalidArgument", bad, err)
		}
	}
	if _, err := redislease.New(nil); !errors.Is(err, lease.ErrInvalidArgument) {
		t.Errorf("no client: %v", err)
	}
	// The lease is one hash under the prefix, with no TTL: its token
	// survives expiry.
	s := newStore(t, rdb, prefix)
	if _, err := s.Acquire(t.Context(), "job", "h", 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if ttl := rdb.PTTL(t.Context(), s.Key("job")).Val(); ttl != -1 {
		t.Fatalf("PTTL of the lease hash = %v, want none (-1)", ttl)
	}
	if h := rdb.HGetAll(t.Context(), s.Key("job")).Val(); h["holder"] != "h" || h["token"] == "" || h["exp"] == "" {
		t.Fatalf("lease hash %v", h)
	}
}

// Tokens stay above every earlier one even when Redis loses the lease's
// hash (a failover to a lagging replica, a restore): they are at least the
// server's time in µs.
func TestTokensSurviveDataLoss(t *testing.T) {
	ctx := t.Context()
	rdb, prefix := testsvc.Redis(t)
	s := newStore(t, rdb, prefix)
	a, err := s.Acquire(ctx, "job", "a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.Del(ctx, s.Key("job")).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond)
	b, err := s.Acquire(ctx, "job", "b", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if b.Token <= a.Token {
		t.Fatalf("token after losing the hash %d, want more than %d", b.Token, a.Token)
	}
	// And a's writes are fenced.
	g := s.Guard(`return 1`)
	if err := g.Run(ctx, a, nil).Err(); !errors.Is(err, lease.ErrFenced) {
		t.Fatalf("guarded write with the lost token: %v", err)
	}
}

// Guard runs the body only while the lease is live, in the same script.
func TestGuard(t *testing.T) {
	ctx := t.Context()
	rdb, prefix := testsvc.Redis(t)
	s := newStore(t, rdb, prefix)
	const ttl = 300 * time.Millisecond
	a, err := s.Acquire(ctx, "job", "a", ttl)
	if err != nil {
		t.Fatal(err)
	}
	key := prefix + "data:" + redislease.HashTag("job")
	// The body sees its own KEYS and ARGV.
	g := s.Guard(`
redis.call('RPUSH', KEYS[1], ARGV[1] .. ':' .. ARGV[2])
return {#KEYS, #ARGV, redis.call('LLEN', KEYS[1])}`)
	v, err := g.Run(ctx, a, []string{key}, "a", 1).Slice()
	if err != nil {
		t.Fatalf("guarded write: %v", err)
	}
	if len(v) != 3 || v[0] != int64(1) || v[1] != int64(2) || v[2] != int64(1) {
		t.Fatalf("body saw %v, want 1 key, 2 args, 1 element", v)
	}
	// The body's own errors come back as they are.
	boom := s.Guard(`return redis.error_reply('BOOM no')`)
	if err := boom.Run(ctx, a, nil).Err(); err == nil || errors.Is(err, lease.ErrLost) || !strings.Contains(err.Error(), "BOOM") {
		t.Fatalf("body error: %v", err)
	}
	time.Sleep(ttl + 50*time.Millisecond)
	// Expired: refused, even before anyone took over.
	err = g.Run(ctx, a, []string{key}, "a", 2).Err()
	if !errors.Is(err, lease.ErrFenced) || !errors.Is(err, lease.ErrLost) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("guarded write after expiry: %v, want ErrFenced", err)
	}
	b, err := s.Acquire(ctx, "job", "b", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	err = g.Run(ctx, a, []string{key}, "a", 3).Err()
	if !errors.Is(err, lease.ErrFenced) || !strings.Contains(err.Error(), `taken over by "b"`) {
		t.Fatalf("guarded write after takeover: %v", err)
	}
	forged := b
	forged.Holder = "a"
	if err := g.Run(ctx, forged, []string{key}, "a", 4).Err(); !errors.Is(err, lease.ErrFenced) {
		t.Fatalf("guarded write with b's token and a's name: %v", err)
	}
	if _, err := g.Run(ctx, b, []string{key}, "b", 5).Slice(); err != nil {
		t.Fatalf("the new holder's write: %v", err)
	}
	got := rdb.LRange(ctx, key, 0, -1).Val()
	if strings.Join(got, ",") != "a:1,b:5" {
		t.Fatalf("writes %v, want only a:1 and b:5", got)
	}

	// Concurrent writers and a takeover: every accepted write carries the
	// token that was current when it ran.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := g.Run(context.WithoutCancel(ctx), b, []string{key}, "b", 6).Err()
				if err != nil && !errors.Is(err, lease.ErrFenced) {
					t.Errorf("guarded write: %v", err)
					return
				}
			}
		})
	}
	time.Sleep(20 * time.Millisecond)
	if err := s.Release(ctx, b); err != nil {
		t.Fatal(err)
	}
	n := rdb.LLen(ctx, key).Val()
	time.Sleep(20 * time.Millisecond)
	close(stop)
	wg.Wait()
	if after := rdb.LLen(ctx, key).Val(); after != n {
		t.Fatalf("%d writes accepted after the release", after-n)
	}
}

// watchedWrite appends v to key in a WATCH transaction fenced by l: the
// way a caller guards a pipeline of commands no script can run.
func watchedWrite(ctx context.Context, rdb redis.UniversalClient, s *redislease.Store, l lease.Lease, key, v string, between func()) error {
	return rdb.Watch(ctx, func(tx *redis.Tx) error {
		var check *redislease.WatchCheck
		if _, err := tx.Pipelined(ctx, func(p redis.Pipeliner) error {
			check = s.Check(ctx, p, l)
			return nil
		}); err != nil {
			return err
		}
		if err := check.Err(); err != nil {
			return err
		}
		if between != nil {
			between()
		}
		_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.RPush(ctx, key, v)
			return nil
		})
		return err
	}, s.Key(l.Name))
}

// A WATCH transaction fenced by WatchCheck writes only while its lease is
// live, and a takeover between the check and the EXEC aborts the EXEC.
func TestWatchCheck(t *testing.T) {
	ctx := t.Context()
	rdb, prefix := testsvc.Redis(t)
	s := newStore(t, rdb, prefix)
	const ttl = 300 * time.Millisecond
	key := prefix + "data:" + redislease.HashTag("job")
	if err := watchedWrite(ctx, rdb, s, lease.Lease{Name: "job", Holder: "a", Token: 1}, key, "never", nil); !errors.Is(err, lease.ErrFenced) || !strings.Contains(err.Error(), "never acquired") {
		t.Fatalf("write under a lease never acquired: %v", err)
	}
	a, err := s.Acquire(ctx, "job", "a", ttl)
	if err != nil {
		t.Fatal(err)
	}
	if err := watchedWrite(ctx, rdb, s, a, key, "a1", nil); err != nil {
		t.Fatalf("write of the holder: %v", err)
	}
	forged := a
	forged.Token++
	if err := watchedWrite(ctx, rdb, s, forged, key, "forged", nil); !errors.Is(err, lease.ErrFenced) || !strings.Contains(err.Error(), "never issued") {
		t.Fatalf("write with a token never issued: %v", err)
	}
	time.Sleep(ttl + 50*time.Millisecond)
	if err := watchedWrite(ctx, rdb, s, a, key, "late", nil); !errors.Is(err, lease.ErrFenced) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("write after expiry: %v, want ErrFenced", err)
	}
	a, err = s.Acquire(ctx, "job", "a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// Checked while live, then taken over before the EXEC: aborted.
	var b lease.Lease
	err = watchedWrite(ctx, rdb, s, a, key, "raced", func() {
		if err := s.Release(ctx, a); err != nil {
			t.Fatal(err)
		}
		var err error
		if b, err = s.Acquire(ctx, "job", "b", time.Minute); err != nil {
			t.Fatal(err)
		}
	})
	if !errors.Is(err, redis.TxFailedErr) {
		t.Fatalf("write across a takeover: %v, want the EXEC aborted", err)
	}
	if err := watchedWrite(ctx, rdb, s, a, key, "deposed", nil); !errors.Is(err, lease.ErrFenced) || !strings.Contains(err.Error(), `taken over by "b"`) {
		t.Fatalf("write of the deposed holder: %v", err)
	}
	if err := watchedWrite(ctx, rdb, s, b, key, "b1", nil); err != nil {
		t.Fatalf("write of the new holder: %v", err)
	}
	if got := strings.Join(rdb.LRange(ctx, key, 0, -1).Val(), ","); got != "a1,b1" {
		t.Fatalf("writes %s, want a1,b1", got)
	}
}

// QueueCurrent answers in a pipeline what Current answers.
func TestQueueCurrent(t *testing.T) {
	ctx := t.Context()
	rdb, prefix := testsvc.Redis(t)
	s := newStore(t, rdb, prefix)
	a, err := s.Acquire(ctx, "live", "a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	gone, err := s.Acquire(ctx, "gone", "g", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, gone); err != nil {
		t.Fatal(err)
	}
	pipe := rdb.Pipeline()
	live, released, never := s.QueueCurrent(ctx, pipe, "live"), s.QueueCurrent(ctx, pipe, "gone"), s.QueueCurrent(ctx, pipe, "never")
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if l, ok, err := live.Result(); err != nil || !ok || l.Holder != "a" || l.Token != a.Token || !l.Expires.Equal(a.Expires) {
		t.Fatalf("live lease: %v %v %v, want %v", l, ok, err, a)
	}
	for name, c := range map[string]*redislease.CurrentCmd{"released": released, "never acquired": never} {
		if l, ok, err := c.Result(); err != nil || ok {
			t.Fatalf("%s lease: %v %v %v, want none", name, l, ok, err)
		}
	}
}
