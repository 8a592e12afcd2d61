// Package redisstore is a commandbus.IdempotencyStore on Redis, shared by
// every process that uses the same client and prefix.
package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/commandbus"
)

// Store is a commandbus.IdempotencyStore on Redis, shared by every process that
// uses the same client and prefix.
//
// Each command ID is one key, prefix + ID. Claim sets it to a pending marker
// only if it is absent (SET NX semantics, atomically in a script) with a
// lease TTL; Complete replaces the marker with the JSON-encoded Result and
// the result TTL; Release deletes the marker if it is still the caller's.
// A claimant that dies without releasing blocks its command ID until the
// lease expires, so the lease should exceed the longest a command may run
// (its Timeout). Waiting claimants poll the key with backoff.
type Store struct {
	client redis.UniversalClient
	prefix string
	ttl    time.Duration
	lease  time.Duration
	poll   time.Duration
}

// Option configures a Store.
type Option func(*Store)

// ResultTTL sets how long results are kept (default 24 hours).
func ResultTTL(d time.Duration) Option {
	return func(s *Store) { s.ttl = d }
}

// LeaseTTL sets how long a claim lasts when its holder neither completes
// nor releases it (default 1 minute).
func LeaseTTL(d time.Duration) Option {
	return func(s *Store) { s.lease = d }
}

// PollInterval sets the longest pause between two looks at a key held
// by another execution (default 50ms; the first looks come sooner; zero
// or less means the default).
func PollInterval(d time.Duration) Option {
	return func(s *Store) { s.poll = d }
}

// New returns a Store keeping its keys under prefix (for
// example "myapp:cmd:").
func New(client redis.UniversalClient, prefix string, opts ...Option) *Store {
	s := &Store{client: client, prefix: prefix, ttl: 24 * time.Hour, lease: time.Minute, poll: defaultPoll}
	for _, o := range opts {
		o(s)
	}
	if s.poll <= 0 {
		s.poll = defaultPoll
	}
	return s
}

// defaultPoll is the default PollInterval.
const defaultPoll = 50 * time.Millisecond

const (
	pendingMark = "p:"
	resultMark  = "r:"
)

// claimScript sets KEYS[1] to ARGV[1] for ARGV[2] ms if it is absent and
// returns "" then; otherwise it returns the key's value.
var claimScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ''
`)

// completeScript stores the result ARGV[1] for ARGV[2] ms unless a result
// is already stored (a claimant whose lease expired may complete after
// another one).
var completeScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 2) == 'r:' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`)

// releaseScript deletes KEYS[1] if it still holds the pending marker ARGV[1].
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// Claim implements IdempotencyStore.
func (s *Store) Claim(ctx context.Context, key string) (commandbus.Lease, commandbus.Result, error) {
	k := s.prefix + key
	marker := pendingMark + uuid.NewString()
	// Waiting for a claimant that holds the key: 1 ms doubling up to the
	// poll interval, jittered so that waiters do not poll in step.
	wait := backoff.New(backoff.Policy{Initial: min(time.Millisecond, s.poll), Max: s.poll, Jitter: 0.2})
	for {
		v, err := claimScript.Run(ctx, s.client, []string{k}, marker, s.lease.Milliseconds()).Text()
		if err != nil {
			return nil, commandbus.Result{}, fmt.Errorf("redis claim %s: %w", k, err)
		}
		switch {
		case v == "":
			return &redisLease{s: s, key: k, marker: marker}, commandbus.Result{}, nil
		case strings.HasPrefix(v, resultMark):
			var res commandbus.Result
			if err := json.Unmarshal([]byte(v[len(resultMark):]), &res); err != nil {
				return nil, commandbus.Result{}, fmt.Errorf("redis claim %s: decode result: %w", k, err)
			}
			return nil, res, nil
		case !strings.HasPrefix(v, pendingMark):
			return nil, commandbus.Result{}, fmt.Errorf("redis claim %s: unexpected value %q", k, v)
		}
		if err := wait.Sleep(ctx); err != nil {
			return nil, commandbus.Result{}, err
		}
	}
}

type redisLease struct {
	s      *Store
	key    string
	marker string
}

// Complete implements Lease.
func (l *redisLease) Complete(ctx context.Context, res commandbus.Result) error {
	res.Duplicate = false
	b, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("redis complete %s: encode result: %w", l.key, err)
	}
	err = completeScript.Run(ctx, l.s.client, []string{l.key}, resultMark+string(b), l.s.ttl.Milliseconds()).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("redis complete %s: %w", l.key, err)
	}
	return nil
}

// Release implements Lease.
func (l *redisLease) Release(ctx context.Context) error {
	err := releaseScript.Run(ctx, l.s.client, []string{l.key}, l.marker).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("redis release %s: %w", l.key, err)
	}
	return nil
}
