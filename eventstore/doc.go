// Package eventstore is the contract of an eskit event store: the event and
// record types, the global feed Position, optimistic concurrency through
// ExpectedVersion, the Store interface, typed errors, and the event type
// Registry that turns Go values into stored payloads and back (with upcasters
// for older payload versions).
//
// Implementations live in sub-packages: memstore (in memory) and pgstore
// (PostgreSQL). Every implementation must pass the conformance suite in
// storetest.
package eventstore
