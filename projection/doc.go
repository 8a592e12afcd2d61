// Package projection builds read models from the event store's records,
// in Redis or in PostgreSQL (a Target: Redis, Postgres): live from a
// durable JetStream consumer, or straight from the store's feed for
// catch-up and rebuilds (no broker retention needed).
//
// A Projection has a name and an apply function. The Runner hands it records
// in feed order, in batches; a batch's writes, the stream versions it
// applied and the projection's checkpoint commit together (one MULTI/EXEC
// on Redis, one transaction on PostgreSQL), and a record is applied only
// when it is its stream's next version, so redelivered messages are never
// applied twice. Inline applies PostgreSQL projections in the append's own
// transaction.
//
// # Life cycle
//
// Runner.Run returns an error at once when the runner cannot work at all
// (a server too old for it, Redis refusing its credentials, a projection
// whose stored configuration differs: a *ConfigError), and otherwise runs
// until its context ends and returns nil, retrying outages itself with the
// BackoffPolicy of WithBackoffPolicy. Started, Ready and Done tell how Run
// is doing; outbox.Relay has the same life cycle. Stop a runner by
// cancelling its context and waiting for Run to return: it releases its
// leases, so other runners take its partitions over at once.
//
// # Keys
//
// Every key lives under the runner's prefix: the deployment's word, such
// as "bank", the relay's too, followed by ':' (KeyPrefix). A projection's
// keys carry its name (and partition) as their hash tag, so on a Redis
// Cluster a batch's writes, its checkpoint and the lease fencing them are
// in one slot; the layout is in keys.go, and Namespace.Key gives the read
// model's keys.
//
// # Exactly one active runner per partition
//
// Each partition of a projection is applied by one runner at a time across
// processes: the runner holds the partition's lease (package lease, kept
// by a lease.Keeper on a lease/redislease store in the same Redis, named
// "<projection>:<partition>"), and every batch's MULTI/EXEC runs under
// WATCH of the lease's key after checking in the same transaction that the
// runner's token is the live one (redislease.WatchCheck), so a runner that
// lost its lease, or froze past its TTL, cannot commit. A standby takes
// over when the lease is released or expires (WithLease: 5 s by default).
//
// # Rebuilds
//
// Runner.Rebuild builds namespace V+1 from the store's feed while V keeps
// serving and following live events, then pauses the live side, finishes the
// remainder, switches the pointer atomically and deletes V's keys in the
// background. Batch.Replay reports history being replayed into a namespace
// that is not serving yet, so side effects can be held back.
//
// # Poison records
//
// A record whose apply keeps failing (after bounded retries) is parked with
// its error, and the projection goes on; later records of the same stream are
// parked behind it, so a read model never shows a stream out of order, until
// the parked records are retried (Runner.RetryParked) or skipped
// (Runner.SkipParked).
package projection
