package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/eskit/eskit/backoff"
)

// DefaultBackoff returns the policy that paces a Keeper's attempts after
// store errors (the store unreachable, a timeout) unless WithBackoffPolicy
// sets another: 50 ms doubling to 5 s, a fifth of each random.
func DefaultBackoff() backoff.Policy {
	return backoff.Policy{Initial: 50 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.2}
}

// standbyJitter is the random fraction of a standby's wait between
// attempts, so that standbys do not try in step.
const standbyJitter = 0.2

// Hooks are told what a Keeper's leases go through, for metrics and
// readiness; every field is optional. They run on the Keeper's
// goroutines and must not block.
type Hooks struct {
	// Acquired: the Keeper holds l.
	Acquired func(l Lease)
	// Renewed: a renewal of l succeeded.
	Renewed func(l Lease)
	// RenewFailed: a renewal of l failed with err, a store error; the
	// Keeper keeps trying until its deadline.
	RenewFailed func(l Lease, err error)
	// Lost: l was lost (err matches ErrLost): taken over, expired in the
	// store, or the holder's own deadline passed. The held context is
	// cancelled with err.
	Lost func(l Lease, err error)
	// Released: the Keeper gave l back; err is the store's answer (nil,
	// or an error matching ErrLost when it was already gone).
	Released func(l Lease, err error)
	// AcquireFailed: an attempt to acquire failed with err, a store error
	// (not ErrHeld: a standby's refusals are not failures).
	AcquireFailed func(name string, err error)
}

// Option configures a Keeper.
type Option func(*Keeper)

// WithTTL sets the lease TTL (DefaultTTL, 5 s): a holder that stops
// renewing is replaced within it.
func WithTTL(ttl time.Duration) Option { return func(k *Keeper) { k.ttl = ttl } }

// WithRenewInterval sets how often the holder renews (TTL/3 by default).
func WithRenewInterval(d time.Duration) Option { return func(k *Keeper) { k.renewEvery = d } }

// WithSafetyMargin sets how much earlier than the TTL the holder gives its
// lease up on its own clock (TTL/10 by default): the held context ends at
// the send time of the last successful renewal plus TTL minus the margin.
func WithSafetyMargin(d time.Duration) Option { return func(k *Keeper) { k.margin = d } }

// WithRetryInterval sets how often a standby tries to acquire a lease held
// by another (TTL/5 by default, with a fifth of it random); it tries
// sooner when the store says the lease expires sooner.
func WithRetryInterval(d time.Duration) Option { return func(k *Keeper) { k.retryEvery = d } }

// WithBackoffPolicy sets the delays after store errors (DefaultBackoff()).
func WithBackoffPolicy(p backoff.Policy) Option { return func(k *Keeper) { k.errBackoff = p } }

// WithHolder sets the holder (DefaultHolder() by default). It must be
// unique to the Keeper: two Keepers with one holder value are told apart
// only by their tokens.
func WithHolder(holder string) Option { return func(k *Keeper) { k.holder = holder } }

// WithLogger sets the logger (slog.Default() by default).
func WithLogger(l *slog.Logger) Option { return func(k *Keeper) { k.log = l } }

// WithHooks sets the hooks.
func WithHooks(h Hooks) Option { return func(k *Keeper) { k.hooks = h } }

// DefaultHolder returns a holder unique to the call: host name, process
// ID and a random suffix ("web-1/4242/9f86d081").
func DefaultHolder() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	return fmt.Sprintf("%s/%d/%08x", host, os.Getpid(), rand.Uint32())
}

// Keeper holds the lease of one name for the work it guards: it acquires
// the lease (standing by while another holder has it), renews it every
// renew interval, and gives the holder a context that ends as soon as the
// lease is lost, or as soon as the holder's own deadline passes: the send
// time of the last successful renewal, plus the TTL, minus the safety
// margin, on this process's monotonic clock (and its wall clock, whichever
// passes first). A process that froze (SIGSTOP, a GC or VM pause) thus
// sees its context as ended on waking (Held.Err checks the deadline
// synchronously), before it can talk to the store; its writes are fenced
// anyway.
//
// A Keeper's methods are safe for concurrent use; each Hold or Run is one
// candidate, so run one per process and lease.
type Keeper struct {
	store      Store
	name       string
	holder     string
	ttl        time.Duration
	renewEvery time.Duration
	margin     time.Duration
	retryEvery time.Duration
	errBackoff backoff.Policy
	log        *slog.Logger
	hooks      Hooks
}

// NewKeeper returns a Keeper of the lease name on store. It fails with an
// error matching ErrInvalidArgument when the name, holder or durations are
// unusable: the renew interval plus the safety margin must be shorter than
// the TTL.
func NewKeeper(store Store, name string, opts ...Option) (*Keeper, error) {
	k := &Keeper{store: store, name: name, ttl: DefaultTTL, errBackoff: DefaultBackoff()}
	for _, o := range opts {
		o(k)
	}
	if k.holder == "" {
		k.holder = DefaultHolder()
	}
	if k.renewEvery == 0 {
		k.renewEvery = k.ttl / 3
	}
	if k.margin == 0 {
		k.margin = k.ttl / 10
	}
	if k.retryEvery == 0 {
		k.retryEvery = k.ttl / 5
	}
	if k.log == nil {
		k.log = slog.Default()
	}
	switch {
	case store == nil:
		return nil, fmt.Errorf("%w: keeper of %q has no store", ErrInvalidArgument, name)
	case k.renewEvery <= 0 || k.margin < 0 || k.retryEvery <= 0:
		return nil, fmt.Errorf("%w: keeper of %q: renew interval %s, safety margin %s, retry interval %s: want positive", ErrInvalidArgument, name, k.renewEvery, k.margin, k.retryEvery)
	case k.renewEvery+k.margin >= k.ttl:
		return nil, fmt.Errorf("%w: keeper of %q: renew interval %s plus safety margin %s must be shorter than the ttl %s", ErrInvalidArgument, name, k.renewEvery, k.margin, k.ttl)
	}
	if err := ValidateAcquire(name, k.holder, k.ttl); err != nil {
		return nil, fmt.Errorf("keeper: %w", err)
	}
	if err := k.errBackoff.Validate(); err != nil {
		return nil, fmt.Errorf("%w: keeper of %q: %w", ErrInvalidArgument, name, err)
	}
	return k, nil
}

// Name returns the lease's name.
func (k *Keeper) Name() string { return k.name }

// Holder returns the Keeper's holder.
func (k *Keeper) Holder() string { return k.holder }

// TTL returns the lease TTL.
func (k *Keeper) TTL() time.Duration { return k.ttl }

// Hold acquires the lease, standing by while another holder has it, and
// returns it held: renewed until the returned Held is released or lost, or
// ctx ends (then it is released). It returns only once it holds the
// lease, or with ctx's error when ctx ends first.
func (k *Keeper) Hold(ctx context.Context) (*Held, error) { return k.hold(ctx, ctx) }

// TryHold makes one attempt to acquire the lease: it returns it held (as
// Hold does, renewed until released or lost, or ctx ends), or the store's
// refusal, a *HeldError when another holder has it. A scheduler that
// shares many leases among workers tries each with it instead of standing
// by on one.
func (k *Keeper) TryHold(ctx context.Context) (*Held, error) {
	sent := time.Now()
	l, err := k.store.Acquire(ctx, k.name, k.holder, k.ttl)
	if err != nil {
		if !errors.Is(err, ErrHeld) && !errors.Is(err, ErrInvalidArgument) && ctx.Err() == nil && k.hooks.AcquireFailed != nil {
			k.hooks.AcquireFailed(k.name, err)
		}
		return nil, err
	}
	return k.start(ctx, l, sent), nil
}

// hold acquires the lease while ctx lasts, and holds it while life lasts.
func (k *Keeper) hold(ctx, life context.Context) (*Held, error) {
	errs := backoff.New(k.errBackoff)
	standby := backoff.Policy{Initial: k.retryEvery, Max: k.retryEvery, Jitter: standbyJitter}
	logged := false
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		sent := time.Now()
		l, err := k.store.Acquire(ctx, k.name, k.holder, k.ttl)
		if err == nil {
			return k.start(life, l, sent), nil
		}
		var held *HeldError
		var wait time.Duration
		switch {
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case errors.As(err, &held):
			errs.Reset()
			if !logged {
				k.log.Info("lease: standing by", "lease", k.name, "holder", held.Current.Holder, "token", held.Current.Token)
				logged = true
			}
			wait = standby.Next(1)
			if held.Remaining > 0 && held.Remaining < wait {
				wait = held.Remaining + time.Millisecond
			}
		case errors.Is(err, ErrInvalidArgument):
			return nil, err
		default:
			k.log.Warn("lease: acquire", "lease", k.name, "err", err)
			if k.hooks.AcquireFailed != nil {
				k.hooks.AcquireFailed(k.name, err)
			}
			wait = errs.Next()
		}
		if err := backoff.Sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// Run runs fn, over and over, whenever this Keeper holds the lease, until
// ctx ends; then it returns nil. fn's context ends when the lease is lost
// (its cause then matches ErrLost) or ctx ends: fn must return soon after.
// The lease is renewed until fn has returned, and released only then, so
// that no standby starts while fn still runs (unless the lease is lost).
// The Keeper then stands by again: at once when the lease was lost, after
// the backoff delay when fn failed, and after the retry interval when fn
// returned nil (it stepped down, giving the others a chance).
func (k *Keeper) Run(ctx context.Context, fn func(ctx context.Context, h *Held) error) error {
	errs := backoff.New(k.errBackoff)
	for {
		h, err := k.hold(ctx, context.WithoutCancel(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		work, cancel := context.WithCancelCause(h.Context())
		stop := context.AfterFunc(ctx, func() { cancel(context.Cause(ctx)) })
		ferr := fn(work, h)
		stop()
		cancel(nil)
		lost := h.Err()
		_ = h.Release(context.WithoutCancel(ctx)) // reported by the hooks and the log
		var wait time.Duration
		switch {
		case ctx.Err() != nil:
			return nil
		case lost != nil:
			errs.Reset()
		case ferr != nil:
			k.log.Error("lease: guarded work failed; released the lease", "lease", k.name, "token", h.Token(), "err", ferr)
			wait = errs.Next()
		default:
			errs.Reset()
			wait = k.retryEvery
		}
		if err := backoff.Sleep(ctx, wait); err != nil {
			return nil
		}
	}
}

// Held is a lease a Keeper holds and renews. Its context ends when the
// lease is lost, released, or Hold's context ends; guarded work runs
// on it and carries Token() in its writes.
type Held struct {
	k      *Keeper
	ctx    context.Context
	cancel context.CancelCauseFunc
	done   chan struct{} // closed once the renewals stopped and the release ran

	mu           sync.Mutex
	lease        Lease
	deadline     time.Time // monotonic: sent + ttl − margin
	deadlineWall time.Time // the same on the wall clock
	timer        *time.Timer
	lost         bool  // the lost error was recorded
	releaseErr   error // what the store said to the release
}

func (k *Keeper) start(ctx context.Context, l Lease, sent time.Time) *Held {
	hctx, cancel := context.WithCancelCause(ctx)
	h := &Held{k: k, ctx: hctx, cancel: cancel, done: make(chan struct{}), lease: l}
	h.setDeadline(sent)
	h.timer = time.AfterFunc(time.Until(h.deadline), h.checkDeadline)
	k.log.Info("lease: acquired", "lease", k.name, "holder", l.Holder, "token", l.Token, "ttl", k.ttl)
	if k.hooks.Acquired != nil {
		k.hooks.Acquired(l)
	}
	go h.run()
	return h
}

// setDeadline moves the deadline to sent + ttl − margin; h.mu is held (or
// h is not shared yet).
func (h *Held) setDeadline(sent time.Time) {
	d := h.k.ttl - h.k.margin
	h.deadline = sent.Add(d)
	h.deadlineWall = sent.Round(0).Add(d)
}

// pastDeadline reports whether now is past the deadline on either clock;
// h.mu is held.
func (h *Held) pastDeadline(now time.Time) bool {
	return !now.Before(h.deadline) || !now.Round(0).Before(h.deadlineWall)
}

// Context returns the held context: it ends when the lease is lost (its
// cause then matches ErrLost), released, or Hold's context ends.
func (h *Held) Context() context.Context { return h.ctx }

// Lost returns a channel closed when the held context ends.
func (h *Held) Lost() <-chan struct{} { return h.ctx.Done() }

// Lease returns the lease as last acquired or renewed.
func (h *Held) Lease() Lease {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lease
}

// Token returns the lease's fencing token.
func (h *Held) Token() uint64 { return h.Lease().Token }

// Deadline returns the time until which the holder trusts its lease
// without another successful renewal (on the monotonic clock: compare it
// with time.Now(), never with Lease().Expires).
func (h *Held) Deadline() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.deadline
}

// Err returns nil while the lease is held, and otherwise why not: the
// held context's cause (an error matching ErrLost when the lease was lost,
// context.Canceled when it was released or Hold's context ended).
// It checks the deadline itself, on the clocks, rather than wait for a
// timer: call it right before a guarded write, and a process that has
// just woken from a freeze learns at once that its lease is gone.
func (h *Held) Err() error {
	if h.ctx.Err() == nil {
		h.checkDeadline()
	}
	if h.ctx.Err() != nil {
		return context.Cause(h.ctx)
	}
	return nil
}

// checkDeadline ends the lease when its deadline has passed.
func (h *Held) checkDeadline() {
	h.mu.Lock()
	past := h.pastDeadline(time.Now())
	l := h.lease
	h.mu.Unlock()
	if past {
		h.lose(Lost(l, fmt.Sprintf("no renewal succeeded within the holder's deadline (ttl %s − safety margin %s)", h.k.ttl, h.k.margin)))
	}
}

// lose ends the held context with err (matching ErrLost), once.
func (h *Held) lose(err error) {
	h.mu.Lock()
	if h.lost || h.ctx.Err() != nil {
		h.mu.Unlock()
		return
	}
	h.lost = true
	l := h.lease
	h.cancel(err)
	h.mu.Unlock()
	h.k.log.Warn("lease: lost", "lease", l.Name, "token", l.Token, "err", err)
	if h.k.hooks.Lost != nil {
		h.k.hooks.Lost(l, err)
	}
}

// Release stops the renewals and gives the lease back, and waits until
// that is done (or ctx ends). It returns the store's answer: nil, or an
// error matching ErrLost when the lease was already gone (lost, expired,
// or released before). Calling it again returns the same.
func (h *Held) Release(ctx context.Context) error {
	h.cancel(context.Canceled)
	select {
	case <-h.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.releaseErr
}

// renewFailed reports a renewal that failed with a store error.
func (h *Held) renewFailed(l Lease, err error) {
	h.k.log.Warn("lease: renew", "lease", l.Name, "token", l.Token, "err", err)
	if h.k.hooks.RenewFailed != nil {
		h.k.hooks.RenewFailed(l, err)
	}
}

// run renews the lease until the held context ends, then releases it
// (unless the store said it was lost).
func (h *Held) run() {
	defer close(h.done)
	k := h.k
	errs := backoff.New(k.errBackoff)
	t := time.NewTimer(k.renewEvery)
	defer t.Stop()
	storeLost := false
loop:
	for {
		select {
		case <-h.ctx.Done():
			break loop
		case <-t.C:
		}
		h.mu.Lock()
		l, deadline := h.lease, h.deadline
		h.mu.Unlock()
		sent := time.Now()
		if h.Err() != nil {
			break loop
		}
		// A renewal that has not answered by the deadline is too late.
		rctx, cancel := context.WithDeadline(h.ctx, deadline)
		nl, err := k.store.Renew(rctx, l, k.ttl)
		cancel()
		switch {
		case err == nil:
			h.mu.Lock()
			if h.ctx.Err() == nil {
				h.lease = nl
				h.setDeadline(sent)
				h.timer.Reset(time.Until(h.deadline))
			}
			h.mu.Unlock()
			errs.Reset()
			if k.hooks.Renewed != nil {
				k.hooks.Renewed(nl)
			}
			t.Reset(k.renewEvery)
		case errors.Is(err, ErrLost):
			storeLost = true
			h.lose(err)
			break loop
		case h.ctx.Err() != nil:
			if errors.Is(context.Cause(h.ctx), ErrLost) {
				h.renewFailed(l, err) // cut off by the deadline
			}
			break loop
		default:
			h.renewFailed(l, err)
			h.checkDeadline()
			t.Reset(min(errs.Next(), k.renewEvery))
		}
	}
	h.timer.Stop()
	h.mu.Lock()
	l := h.lease
	h.mu.Unlock()
	if storeLost {
		h.mu.Lock()
		h.releaseErr = context.Cause(h.ctx)
		h.mu.Unlock()
		return
	}
	// Bounded: a store that does not answer leaves the lease to expire.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(h.ctx), k.ttl)
	err := k.store.Release(rctx, l)
	cancel()
	h.mu.Lock()
	h.releaseErr = err
	h.mu.Unlock()
	if err != nil && !errors.Is(err, ErrLost) {
		k.log.Warn("lease: release", "lease", l.Name, "token", l.Token, "err", err)
	} else if err == nil {
		k.log.Info("lease: released", "lease", l.Name, "token", l.Token)
	}
	if k.hooks.Released != nil {
		k.hooks.Released(l, err)
	}
}
