// Package redislease is a lease.Store on Redis (a single server, or a
// Redis Cluster), with the fencing check of guarded writes in Lua (Guard).
//
// # Keys
//
// Each lease name has one hash, which never expires:
//
//	<prefix>lease:{<name>}   holder, token, exp (µs since the epoch, by the server's clock)
//
// The name is the key's hash tag (with '%', '{' and '}' percent-encoded),
// so on a Redis Cluster every key of one lease is in one slot, and a
// caller may put the keys it writes under the lease in the same slot with
// HashTag. The prefix follows projection.KeyPrefix: "bank" becomes
// "bank:", and a prefix that already ends in a separator stays as it is.
//
// # Expiry and tokens
//
// Every operation is one Lua script that reads the server's clock (TIME)
// and judges expiry by it, never by the client's. The hash outlives
// releases and expiries, so the token it keeps only grows: an acquisition
// sets token = max(token + 1, the server's time in µs). The time floor
// keeps tokens increasing even when Redis loses the hash (a failover to a
// replica that lagged, a restart from an old snapshot) as long as the
// server's clock moves forward: the next token is still above every token
// handed out before the loss. Tokens are thus large numbers (about 2^50),
// not 1, 2, 3.
//
// # What it assumes
//
// Redis 5 or later (scripts replicate their effects). Keys must not be
// evicted: a maxmemory-policy of noeviction or a volatile-* policy (the
// hashes have no TTL). A Redis that loses acknowledged writes can lose a
// renewal or a release (harmless) or an acquisition: then two holders may
// briefly believe they hold the lease, and fencing (Guard, or the guarded
// resource's own token check) is what keeps their writes apart, since the
// later acquisition still has the greater token.
package redislease

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/eskit/eskit/internal/keys"

	"github.com/redis/go-redis/v9"

	"github.com/eskit/eskit/lease"
)

// DefaultPrefix is the key prefix unless WithPrefix sets another.
const DefaultPrefix = "eskit"

// fencedMarker starts the error reply of a guarded script whose lease
// check failed.
const fencedMarker = "ESKITLEASE"

// Store is a lease.Store on Redis. It is safe for concurrent use.
type Store struct {
	rdb    redis.UniversalClient
	prefix string

	acquire *redis.Script
	renew   *redis.Script
	release *redis.Script
	current *redis.Script
}

var _ lease.Store = (*Store)(nil)

// Option configures a Store.
type Option func(*Store)

// WithPrefix sets the key prefix (DefaultPrefix): the deployment's word,
// such as "bank" (the relay's and the runners' too), separated from the
// keys by ':' unless it already ends in a separator. It must not contain
// '{' or '}': the lease name is the keys' hash tag.
func WithPrefix(prefix string) Option { return func(s *Store) { s.prefix = prefix } }

// New returns a lease store on rdb. It fails when the prefix holds a brace.
func New(rdb redis.UniversalClient, opts ...Option) (*Store, error) {
	s := &Store{rdb: rdb, prefix: DefaultPrefix}
	for _, o := range opts {
		o(s)
	}
	if strings.ContainsAny(s.prefix, "{}") {
		return nil, fmt.Errorf("%w: redislease prefix %q contains a brace (the lease name is the keys' hash tag)", lease.ErrInvalidArgument, s.prefix)
	}
	if rdb == nil {
		return nil, fmt.Errorf("%w: redislease has no client", lease.ErrInvalidArgument)
	}
	s.prefix = KeyPrefix(s.prefix)
	s.acquire = redis.NewScript(acquireLua)
	s.renew = redis.NewScript(renewLua)
	s.release = redis.NewScript(releaseLua)
	s.current = redis.NewScript(currentLua)
	return s, nil
}

// KeyPrefix returns the key prefix that prefix names, as
// projection.KeyPrefix does: the word followed by ':' ("bank" → "bank:"),
// or prefix itself when it is empty or ends in anything but a letter or a
// digit ("bank:" and "app/" stay as they are).
func KeyPrefix(prefix string) string { return keys.Prefix(prefix) }

var tagEscaper = strings.NewReplacer("%", "%25", "{", "%7B", "}", "%7D")

// HashTag returns the hash tag of the lease name's keys, "{<name>}" with
// '%', '{' and '}' percent-encoded: a key holding it (and no brace before
// it) is in the lease's slot, so a guarded script may write it on a Redis
// Cluster.
func HashTag(name string) string { return "{" + tagEscaper.Replace(name) + "}" }

// Key returns the key of the lease name's hash.
func (s *Store) Key(name string) string { return s.prefix + "lease:" + HashTag(name) }

// Prefix returns the key prefix, separator included.
func (s *Store) Prefix() string { return s.prefix }

// The scripts below share a prelude reading the server's clock in µs.
const nowLua = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function num(n) return string.format('%.0f', n) end
`

// acquireLua: KEYS[1] the lease, ARGV[1] the holder, ARGV[2] the TTL in
// µs. It returns {1, token, exp} when acquired, {0, holder, token, exp,
// remaining} when a live lease is in the way.
const acquireLua = nowLua + `
local cur = redis.call('HMGET', KEYS[1], 'holder', 'token', 'exp')
local tok = tonumber(cur[2]) or 0
local exp = tonumber(cur[3]) or 0
if cur[1] and exp > now then
  return {0, cur[1], cur[2], cur[3], num(exp - now)}
end
local new = math.max(tok + 1, now)
local nexp = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'token', num(new), 'exp', num(nexp))
return {1, num(new), num(nexp)}`

// checkLua checks that ARGV[1] (holder) and ARGV[2] (token) are the live
// lease at KEYS[1]; it sets why (nil when they are) and cur.
const checkLua = `
local cur = redis.call('HMGET', KEYS[1], 'holder', 'token', 'exp')
local why = nil
if not cur[2] then
  why = 'the lease was never acquired'
elseif cur[2] ~= ARGV[2] then
  if tonumber(cur[2]) < tonumber(ARGV[2]) then
    why = 'the store never issued this token'
  else
    why = 'taken over by "' .. cur[1] .. '" (token ' .. cur[2] .. ')'
  end
elseif cur[1] ~= ARGV[1] then
  why = 'the token belongs to "' .. cur[1] .. '"'
elseif tonumber(cur[3]) <= now then
  why = 'expired or released'
end
`

// renewLua: KEYS[1], ARGV[1] holder, ARGV[2] token, ARGV[3] TTL in µs.
// It returns {1, exp} when renewed, {0, why} when the lease is not live.
const renewLua = nowLua + checkLua + `
if why then return {0, why} end
local nexp = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'exp', num(nexp))
return {1, num(nexp)}`

// releaseLua: KEYS[1], ARGV[1] holder, ARGV[2] token. It returns {1} when
// released, {0, why} when the lease was not live.
const releaseLua = nowLua + checkLua + `
if why then return {0, why} end
redis.call('HSET', KEYS[1], 'exp', num(now))
return {1}`

// currentLua: KEYS[1]. It returns {holder, token, exp} of the live lease,
// or {}.
const currentLua = nowLua + `
local cur = redis.call('HMGET', KEYS[1], 'holder', 'token', 'exp')
if cur[1] and tonumber(cur[3]) > now then
  return {cur[1], cur[2], cur[3]}
end
return {}`

func micros(d time.Duration) int64 { return d.Microseconds() }

func fromMicros(s string) (time.Time, error) {
	us, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	return time.UnixMicro(us), nil
}

// reply is a script's array reply.
type reply []any

func (r reply) str(i int) (string, error) {
	if i >= len(r) {
		return "", fmt.Errorf("redislease: short script reply %v", []any(r))
	}
	s, ok := r[i].(string)
	if !ok {
		return "", fmt.Errorf("redislease: script reply %v: element %d is %T", []any(r), i, r[i])
	}
	return s, nil
}

func (r reply) ok() bool {
	if len(r) == 0 {
		return false
	}
	n, _ := r[0].(int64)
	return n == 1
}

func run(ctx context.Context, rdb redis.UniversalClient, sc *redis.Script, key string, args ...any) (reply, error) {
	v, err := sc.Run(ctx, rdb, []string{key}, args...).Result()
	if err != nil {
		return nil, err
	}
	r, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("redislease: script reply %v (%T), want an array", v, v)
	}
	return r, nil
}

// Acquire implements lease.Store.
func (s *Store) Acquire(ctx context.Context, name, holder string, ttl time.Duration) (lease.Lease, error) {
	if err := lease.ValidateAcquire(name, holder, ttl); err != nil {
		return lease.Lease{}, err
	}
	r, err := run(ctx, s.rdb, s.acquire, s.Key(name), holder, micros(ttl))
	if err != nil {
		return lease.Lease{}, fmt.Errorf("redislease: acquire lease %q: %w", name, err)
	}
	if r.ok() {
		l := lease.Lease{Name: name, Holder: holder}
		if l.Token, l.Expires, err = tokenAndExpiry(r, 1); err != nil {
			return lease.Lease{}, fmt.Errorf("redislease: acquire lease %q: %w", name, err)
		}
		return l, nil
	}
	cur := lease.Lease{Name: name}
	if cur.Holder, err = r.str(1); err != nil {
		return lease.Lease{}, err
	}
	if cur.Token, cur.Expires, err = tokenAndExpiry(r, 2); err != nil {
		return lease.Lease{}, fmt.Errorf("redislease: acquire lease %q: %w", name, err)
	}
	rem, err := r.str(4)
	if err != nil {
		return lease.Lease{}, err
	}
	us, err := strconv.ParseInt(rem, 10, 64)
	if err != nil {
		return lease.Lease{}, fmt.Errorf("redislease: acquire lease %q: remaining %q: %w", name, rem, err)
	}
	return lease.Lease{}, &lease.HeldError{Current: cur, Remaining: time.Duration(us) * time.Microsecond}
}

func tokenAndExpiry(r reply, i int) (uint64, time.Time, error) {
	ts, err := r.str(i)
	if err != nil {
		return 0, time.Time{}, err
	}
	tok, err := strconv.ParseUint(ts, 10, 64)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("token %q: %w", ts, err)
	}
	es, err := r.str(i + 1)
	if err != nil {
		return 0, time.Time{}, err
	}
	exp, err := fromMicros(es)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("expiry %q: %w", es, err)
	}
	return tok, exp, nil
}

// Renew implements lease.Store.
func (s *Store) Renew(ctx context.Context, l lease.Lease, ttl time.Duration) (lease.Lease, error) {
	if err := lease.ValidateLease(l); err != nil {
		return lease.Lease{}, err
	}
	if err := lease.ValidateTTL(ttl); err != nil {
		return lease.Lease{}, err
	}
	r, err := run(ctx, s.rdb, s.renew, s.Key(l.Name), l.Holder, strconv.FormatUint(l.Token, 10), micros(ttl))
	if err != nil {
		return lease.Lease{}, fmt.Errorf("redislease: renew %s: %w", l, err)
	}
	if !r.ok() {
		why, _ := r.str(1)
		return lease.Lease{}, lease.Lost(l, why)
	}
	es, err := r.str(1)
	if err != nil {
		return lease.Lease{}, err
	}
	if l.Expires, err = fromMicros(es); err != nil {
		return lease.Lease{}, fmt.Errorf("redislease: renew %s: expiry %q: %w", l, es, err)
	}
	return l, nil
}

// Release implements lease.Store.
func (s *Store) Release(ctx context.Context, l lease.Lease) error {
	if err := lease.ValidateLease(l); err != nil {
		return err
	}
	r, err := run(ctx, s.rdb, s.release, s.Key(l.Name), l.Holder, strconv.FormatUint(l.Token, 10))
	if err != nil {
		return fmt.Errorf("redislease: release %s: %w", l, err)
	}
	if !r.ok() {
		why, _ := r.str(1)
		return lease.Lost(l, why)
	}
	return nil
}

// Current implements lease.Store.
func (s *Store) Current(ctx context.Context, name string) (lease.Lease, bool, error) {
	if err := lease.ValidateName(name); err != nil {
		return lease.Lease{}, false, err
	}
	r, err := run(ctx, s.rdb, s.current, s.Key(name))
	if err != nil {
		return lease.Lease{}, false, fmt.Errorf("redislease: read lease %q: %w", name, err)
	}
	if len(r) == 0 {
		return lease.Lease{}, false, nil
	}
	l := lease.Lease{Name: name}
	if l.Holder, err = r.str(0); err != nil {
		return lease.Lease{}, false, err
	}
	if l.Token, l.Expires, err = tokenAndExpiry(r, 1); err != nil {
		return lease.Lease{}, false, fmt.Errorf("redislease: read lease %q: %w", name, err)
	}
	return l, true, nil
}

// Guarded is a Lua script whose body runs only while the lease given to
// Run is live, checked in the same script: Redis runs a script atomically,
// so no takeover comes between the check and the writes.
type Guarded struct {
	s  *Store
	sc *redis.Script
}

// Guard returns the guarded script of body. The body is ordinary Redis Lua
// and sees its own keys and arguments as KEYS and ARGV, those given to
// Run; the lease's key and token come first in the real call and are
// taken off before the body runs. On a Redis Cluster every key of the body
// must be in the lease's slot: put HashTag(name) in them (and no brace
// before it).
func (s *Store) Guard(body string) *Guarded {
	return &Guarded{s: s, sc: redis.NewScript(nowLua + `
local function __lease_check()
` + checkLua + `
  return why
end
local why = __lease_check()
if why then return redis.error_reply('` + fencedMarker + ` ' .. why) end
local KEYS = {unpack(KEYS, 2)}
local ARGV = {unpack(ARGV, 3)}
` + body)}
}

// Run runs the guarded script for the holder of l with the body's keys and
// args. Its error matches lease.ErrFenced (and lease.ErrLost) when l is
// not the live lease, and the body did not run; otherwise the Cmd is the
// body's.
func (g *Guarded) Run(ctx context.Context, l lease.Lease, keys []string, args ...any) *redis.Cmd {
	all := append([]string{g.s.Key(l.Name)}, keys...)
	argv := append([]any{l.Holder, strconv.FormatUint(l.Token, 10)}, args...)
	cmd := g.sc.Run(ctx, g.s.rdb, all, argv...)
	var rerr redis.Error
	if err := cmd.Err(); errors.As(err, &rerr) {
		if why, ok := strings.CutPrefix(rerr.Error(), fencedMarker+" "); ok {
			cmd.SetErr(lease.Fenced(l, why))
		}
	}
	return cmd
}

// leaseReads are the queued reads of a lease's hash and of the server's
// clock.
type leaseReads struct {
	name   string
	fields *redis.SliceCmd
	now    *redis.TimeCmd
}

func (s *Store) queueReads(ctx context.Context, p redis.Pipeliner, name string) leaseReads {
	return leaseReads{
		name:   name,
		fields: p.HMGet(ctx, s.Key(name), "holder", "token", "exp"),
		now:    p.Time(ctx),
	}
}

// result returns the lease as stored (ok false when never acquired), and
// the server's time of the read.
func (r leaseReads) result() (l lease.Lease, ok bool, now time.Time, err error) {
	vals, err := r.fields.Result()
	if err != nil {
		return l, false, now, fmt.Errorf("redislease: read lease %q: %w", r.name, err)
	}
	if now, err = r.now.Result(); err != nil {
		return l, false, now, fmt.Errorf("redislease: read lease %q: server time: %w", r.name, err)
	}
	str := func(i int) string {
		if i < len(vals) {
			if s, ok := vals[i].(string); ok {
				return s
			}
		}
		return ""
	}
	l = lease.Lease{Name: r.name, Holder: str(0)}
	tok, exp := str(1), str(2)
	if tok == "" {
		return l, false, now, nil
	}
	if l.Token, err = strconv.ParseUint(tok, 10, 64); err != nil {
		return l, false, now, fmt.Errorf("redislease: read lease %q: token %q: %w", r.name, tok, err)
	}
	if l.Expires, err = fromMicros(exp); err != nil {
		return l, false, now, fmt.Errorf("redislease: read lease %q: expiry %q: %w", r.name, exp, err)
	}
	return l, true, now, nil
}

// CurrentCmd is Current queued on a pipeline.
type CurrentCmd struct{ r leaseReads }

// QueueCurrent queues on p the reads that tell the live lease of name, so
// that a caller reading many leases (or a lease with other keys) does it
// in one round trip. Read the answer with Result once p has run.
func (s *Store) QueueCurrent(ctx context.Context, p redis.Pipeliner, name string) *CurrentCmd {
	return &CurrentCmd{s.queueReads(ctx, p, name)}
}

// Result returns what Current would have: the live lease, or false when
// there is none.
func (c *CurrentCmd) Result() (lease.Lease, bool, error) {
	l, ok, now, err := c.r.result()
	if err != nil || !ok || !l.Expires.After(now) {
		return lease.Lease{}, false, err
	}
	return l, true, nil
}

// WatchCheck is the fencing check of a WATCH transaction (MULTI/EXEC)
// guarded by a lease, for writes that a script cannot make (a pipeline of
// arbitrary commands): the transaction WATCHes Key(name) first, queues
// Check with its other reads, and runs its writes only when Err is nil.
// Any change of the lease after the WATCH (a takeover, a renewal, a
// release) aborts the EXEC, so no other holder's acquisition comes between
// the check and the writes. On a Redis Cluster the written keys must be in
// the lease's slot (HashTag).
type WatchCheck struct {
	l lease.Lease
	r leaseReads
}

// Check queues on p the reads of the lease's hash and of the server's
// clock that WatchCheck.Err judges l by.
func (s *Store) Check(ctx context.Context, p redis.Pipeliner, l lease.Lease) *WatchCheck {
	return &WatchCheck{l: l, r: s.queueReads(ctx, p, l.Name)}
}

// Err returns nil when l was the live lease when the reads ran, an error
// matching lease.ErrFenced when it was not, and the reads' error when they
// failed.
func (c *WatchCheck) Err() error {
	cur, ok, now, err := c.r.result()
	if err != nil {
		return fmt.Errorf("redislease: check %s: %w", c.l, err)
	}
	var why string
	switch {
	case !ok:
		why = "the lease was never acquired"
	case cur.Token < c.l.Token:
		why = "the store never issued this token"
	case cur.Token > c.l.Token:
		why = fmt.Sprintf("taken over by %q (token %d)", cur.Holder, cur.Token)
	case cur.Holder != c.l.Holder:
		why = fmt.Sprintf("the token belongs to %q", cur.Holder)
	case !cur.Expires.After(now):
		why = "expired or released"
	}
	if why != "" {
		return lease.Fenced(c.l, why)
	}
	return nil
}
