// Package outbox relays the event store's global feed to NATS JetStream.
//
// A Relay reads the feed from its checkpoint (a row of the checkpoints table
// in PostgreSQL), publishes every record in feed order with PublishAsync,
// setting Nats-Msg-Id to the event ID, and moves the checkpoint only past an
// unbroken prefix of acknowledged messages. On any failure it stops, backs
// off and resumes from the checkpoint: order is kept, and re-published
// messages fall into JetStream's duplicate window.
//
// The relay follows the feed with a subscription of its own, so reading,
// publishing and collecting acknowledgements overlap and a new record is
// published as soon as the feed shows it. The checkpoint is written after
// every batch of acknowledgements, otherwise as soon as acknowledged records
// wait and a checkpoint interval (WithCheckpointInterval) has passed since
// the previous write, and whenever the relay stops, steps down or retries.
//
// Several relays of the same name may run; one leads. Leadership is a
// lease (package lease, LeaseName) in the schema's leases table, renewed
// by a lease.Keeper: a leader that freezes, crashes or is cut off is
// replaced within the lease TTL (WithLeaseTTL). The leader stops
// publishing as soon as its lease is lost or its own deadline passes, and
// every checkpoint write checks the lease in the same statement, so a
// relay that lost its lease can never move the checkpoint (ErrNotLeader).
// A leader that cannot publish to NATS for longer than the TTL steps down.
//
// Subjects are <prefix>.<bucket>.<stream type>.<stream ID>.<event type> (see
// natsevent.Subject): the bucket is eventstore.StreamBucket of the stream ID in two hex
// digits, so a partitioned consumer selects whole buckets (natsevent.PartitionFilters,
// natsevent.NarrowFilter); stream IDs and type names are escaped so that they can never
// add tokens or wildcards. EnsureStream provisions the stream and never
// weakens one that exists (StreamConfig.Reconcile). Older NATS servers
// silently ignore settings and headers they do not know, so the package
// checks the connected server's version and refuses features it lacks
// (natsevent.ErrUnsupported, natsevent.CheckJetStream).
//
// The NATS connection should be made with nats.ReconnectBufSize(-1): a
// publish buffered during a reconnect would reach the server after the
// relay's retries and could be stored out of order.
//
// # Names
//
// A deployment has one prefix, such as "bank": the relay's subjects start
// with it (WithPrefix), the stream is natsevent.StreamName of it ("BANK",
// what EnsureStream names a StreamConfig without Name), and
// projection.WithPrefix takes the same word for the read models' keys.
// Given a *pgstore.Store, the relay keeps its checkpoint and lease in the
// store's database and schema.
//
// # Life cycle
//
// Relay.Run returns an error at once when the relay cannot work at all (a
// server too old for it, a configuration PostgreSQL refuses), and
// otherwise runs until its context ends and returns nil, retrying outages
// itself with the BackoffPolicy of WithBackoffPolicy. Started, Ready and
// Done tell how Run is doing; projection.Runner has the same life cycle.
// Stop a relay by cancelling its context and waiting for Run to return:
// the leader then writes its checkpoint and releases its lease, so a
// standby takes over at once.
package outbox
