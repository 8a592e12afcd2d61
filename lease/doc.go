// Package lease is eskit's one way to elect the single worker that may do
// a piece of work: a lease with an expiry and a fencing token, kept in a
// Store (PostgreSQL: pgstore's Leases; Redis: lease/redislease; memory:
// MemoryStore), held and renewed by a Keeper, and checked by every write
// of the guarded work.
//
// # Why leases, and not locks
//
// A lock that never expires (a PostgreSQL session advisory lock, say)
// stays with a holder that froze (SIGSTOP, a long GC or VM pause) or lost
// its network while its connection looks alive: the work stalls while the
// standbys report ready. A lease expires TTL after its last renewal, by the
// store's clock (PostgreSQL's clock_timestamp(), Redis's TIME), never by
// comparing the clocks of processes, and another holder then takes over.
//
// Expiry alone is not enough: the frozen holder wakes up believing it still
// holds the lease and writes. So every acquisition gets a fencing token
// that strictly increases per lease name, across releases and expiries,
// and is never reused; every guarded write carries it, and is refused once
// a newer token exists:
//
//   - a resource that keeps its own state records the highest token it
//     accepted per lease name and refuses writes with a lower one
//     (CheckToken, Fence; Kleppmann's fencing-token scheme);
//   - where the lease lives in the same database as the write, the write
//     checks the current lease in its own transaction, which also keeps a
//     takeover waiting until it commits: pgstore's Leases.Check (FOR SHARE
//     on the lease's row, inside the caller's pgx.Tx) and GuardSQL, and
//     redislease's Guard (the check and the write in one Lua script).
//
// Refused writes fail with an error matching ErrFenced and ErrLost.
//
// # Holding a lease
//
// A Keeper acquires a lease (standing by while another holder has it,
// trying again every retry interval with jitter, or sooner when the store
// says when the lease expires), renews it every TTL/3, and hands the work a
// Held whose Context ends as soon as the lease is lost, or as soon as the
// holder's own deadline passes: the time the last successful renewal was
// sent, plus the TTL, minus a safety margin (TTL/10), on this process's
// monotonic clock (and its wall clock, whichever passes first). A process
// that wakes from a freeze past that deadline thus stops before it can
// talk to the store; Held.Err checks the deadline synchronously, so call
// it before each guarded write. The default TTL (DefaultTTL) is 5 s: a
// frozen or partitioned holder is replaced within 5 s, and a healthy one
// renews three times per TTL.
//
// Keeper.Run runs a function whenever the Keeper holds the lease, until
// its context ends; Keeper.Hold is the one-shot form. Ending the context
// releases the lease, so that a standby takes over at once.
//
// # Implementations
//
// leasetest.Run is the conformance suite every Store passes. Stores
// validate names and holders (1 to 1024 bytes of UTF-8 without NUL; any
// other character is fine) and TTLs (MinTTL to MaxTTL) before they talk to
// their service.
package lease
