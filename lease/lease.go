package lease

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits of names, holders and TTLs. Every Store refuses what lies outside
// them with an error matching ErrInvalidArgument, before it talks to its
// service.
const (
	// MaxNameLength is the longest lease name, in bytes.
	MaxNameLength = 1024
	// MaxHolderLength is the longest holder, in bytes.
	MaxHolderLength = 1024
	// MinTTL is the shortest TTL a store accepts.
	MinTTL = time.Millisecond
	// MaxTTL is the longest TTL a store accepts.
	MaxTTL = 24 * time.Hour
)

// DefaultTTL is the Keeper's lease TTL unless WithTTL sets another: a
// frozen or partitioned holder is replaced within it.
const DefaultTTL = 5 * time.Second

// Sentinel errors. Match them with errors.Is; the typed errors carry the
// details.
var (
	// ErrHeld: another holder has a live lease of the name (Acquire). A
	// *HeldError names it.
	ErrHeld = errors.New("lease: held by another holder")
	// ErrLost: the caller's lease is no longer live: it expired, was
	// released, or was taken over (Renew, Release, Keeper). The caller must
	// stop the guarded work.
	ErrLost = errors.New("lease: lost")
	// ErrFenced: a guarded write carried a fencing token that is not (or no
	// longer) the current one, and was refused. It matches ErrLost too.
	ErrFenced = fmt.Errorf("lease: write fenced off (stale token): %w", ErrLost)
	// ErrInvalidArgument: a name, holder or TTL outside the limits above.
	// Nothing was sent to the store.
	ErrInvalidArgument = errors.New("lease: invalid argument")
)

// Lease is one acquisition of the lease called Name by Holder.
type Lease struct {
	// Name names the guarded work ("relay/bank", "transfers").
	Name string
	// Holder identifies the process (or worker) holding the lease, for
	// operators and for Renew and Release's checks; the Keeper makes one
	// unique per Keeper (see DefaultHolder).
	Holder string
	// Token is the fencing token: it strictly increases over every
	// acquisition of Name, across releases and expiries, and is never
	// reused. Renewals keep it. Guarded writes carry it (see Fence).
	Token uint64
	// Expires is when the lease expires by the store's clock, as the store
	// last reported it. It is for display and diagnostics: a holder must
	// never compare it with its own clock (the Keeper keeps a deadline of
	// its own, on its monotonic clock).
	Expires time.Time
}

// String describes the lease for logs.
func (l Lease) String() string {
	return fmt.Sprintf("lease %q (holder %q, token %d)", l.Name, l.Holder, l.Token)
}

// Store keeps leases. Implementations judge expiry by their own clock (the
// database's or server's), never by the caller's, and are safe for
// concurrent use. leasetest.Run checks the contract.
type Store interface {
	// Acquire takes the lease called name for holder, for ttl, when no
	// live lease of name exists (none ever, released, or expired), with a
	// token greater than any name had. Otherwise it fails with a
	// *HeldError (matching ErrHeld), even when holder itself holds the
	// live lease: one holder value must not stand for two workers.
	Acquire(ctx context.Context, name, holder string, ttl time.Duration) (Lease, error)
	// Renew extends the live lease l (same name, holder and token) to ttl
	// from now, by the store's clock, and returns it with its new expiry.
	// It fails with an error matching ErrLost when l is not live any more.
	Renew(ctx context.Context, l Lease, ttl time.Duration) (Lease, error)
	// Release ends the live lease l at once, so that another holder may
	// acquire it; the name's token stays. It fails with an error matching
	// ErrLost when l was not live any more, and changes nothing then.
	Release(ctx context.Context, l Lease) error
	// Current returns the live lease of name, or false when there is none.
	Current(ctx context.Context, name string) (Lease, bool, error)
}

// HeldError is Acquire's refusal: Current holds the lease. It matches
// ErrHeld.
type HeldError struct {
	// Current is the live lease, with the holder and token the store saw.
	Current Lease
	// Remaining is how long Current had left, by the store's clock, when
	// the store refused (zero when the store cannot tell). A standby may
	// try again after it.
	Remaining time.Duration
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("lease %q: held by %q (token %d) for another %s", e.Current.Name, e.Current.Holder, e.Current.Token, e.Remaining)
}

// Is makes errors.Is(err, ErrHeld) true.
func (e *HeldError) Is(target error) bool { return target == ErrHeld }

// LostError is the failure of Renew, Release or a guarded write of a lease
// that is no longer live: Lease is what the caller held, and Reason says
// what the store saw. It matches ErrLost, and ErrFenced when Fenced is set.
type LostError struct {
	Lease  Lease
	Reason string
	// Fenced reports a guarded write refused by its fencing check.
	Fenced bool
}

func (e *LostError) Error() string {
	what := "lost"
	if e.Fenced {
		what = "write fenced off"
	}
	return fmt.Sprintf("%s: %s: %s", e.Lease, what, e.Reason)
}

// Is makes errors.Is(err, ErrLost) true, and errors.Is(err, ErrFenced)
// when the error is a refused guarded write.
func (e *LostError) Is(target error) bool {
	return target == ErrLost || e.Fenced && target == ErrFenced
}

// Lost returns a *LostError of l with the reason; stores use it.
func Lost(l Lease, reason string) error { return &LostError{Lease: l, Reason: reason} }

// Fenced returns a *LostError of a guarded write of l refused by its
// fencing check; stores use it.
func Fenced(l Lease, reason string) error { return &LostError{Lease: l, Reason: reason, Fenced: true} }

// ValidateName checks a lease name: 1 to MaxNameLength bytes of UTF-8
// without NUL. Any other character (':', '{', '/', spaces, emoji) is fine.
func ValidateName(name string) error { return validate("name", name, MaxNameLength) }

// ValidateHolder checks a holder as ValidateName checks a name, up to
// MaxHolderLength bytes.
func ValidateHolder(holder string) error { return validate("holder", holder, MaxHolderLength) }

// ValidateTTL checks that ttl lies from MinTTL to MaxTTL.
func ValidateTTL(ttl time.Duration) error {
	if ttl < MinTTL || ttl > MaxTTL {
		return fmt.Errorf("%w: ttl %s: want %s to %s", ErrInvalidArgument, ttl, MinTTL, MaxTTL)
	}
	return nil
}

// ValidateLease checks the name and holder of a lease given to Renew or
// Release, and that it has a token.
func ValidateLease(l Lease) error {
	if err := ValidateName(l.Name); err != nil {
		return err
	}
	if err := ValidateHolder(l.Holder); err != nil {
		return err
	}
	if l.Token == 0 {
		return fmt.Errorf("%w: lease %q has no token (not from Acquire)", ErrInvalidArgument, l.Name)
	}
	return nil
}

func validate(field, s string, limit int) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: empty %s", ErrInvalidArgument, field)
	case len(s) > limit:
		return fmt.Errorf("%w: %s of %d bytes, limit %d", ErrInvalidArgument, field, len(s), limit)
	case strings.IndexByte(s, 0) >= 0:
		return fmt.Errorf("%w: %s %q contains NUL", ErrInvalidArgument, field, s)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: %s %q is not valid UTF-8", ErrInvalidArgument, field, s)
	}
	return nil
}

// ValidateAcquire checks Acquire's arguments (stores call it first).
func ValidateAcquire(name, holder string, ttl time.Duration) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if err := ValidateHolder(holder); err != nil {
		return err
	}
	return ValidateTTL(ttl)
}
