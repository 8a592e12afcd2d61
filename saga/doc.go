// Package saga runs process managers (sagas): long-lived instances that
// react to events, keep state, send commands and wait for deadlines.
//
// # Declaring a saga
//
// New declares a saga by its name, the events it reacts to (On by Go
// type, OnCategory by stream category), the correlation of each (the
// instance a record belongs to: "" for none), which handlers may start an
// instance (Starts), its deadlines (OnDeadline) and what it does with a
// command refused for good (OnRejected). Each handler gets a Step: the
// instance's state (State), Send, Schedule/After/Cancel for deadlines and
// Complete. Compensation is an ordinary step: on a timeout or a
// rejection, send the commands that undo what was done.
//
// # Running it
//
// A Runner follows the store's gap-safe feed from a checkpoint per
// partition. For each record it loads the instance, runs the step and
// commits in one Store.Commit: the state, the commands to send (the
// instance's outbox), the deadlines and the checkpoint, under the
// partition's fencing token. Then it sends the outbox through a
// Dispatcher (a *commandbus.Bus) with command IDs derived from the step
// (CommandID), so a step run again after a crash sends the same IDs and
// the command bus and the aggregate repository apply each once. A due
// deadline's step and its removal are one commit: it fires once across
// restarts and failovers.
//
// Failing commands are retried with a backoff.Policy; after the last
// attempt (or a failing step's) the instance is parked and its later
// records are held back in order, while the others go on. Store.Retry and
// Store.Skip release a parked instance; Store.List, Get and Count show the
// instances by Status.
//
// With WithLease, each partition runs while the runner holds its lease
// (lease.Keeper); the Store refuses writes whose token is not the one
// that last claimed the partition (ErrFenced), so a runner that froze
// and lost its lease cannot write when it wakes. Without a lease, run one
// runner per saga.
//
// A Runner has the life cycle of outbox.Relay and projection.Runner: Run
// returns a start-up error (an invalid lease configuration) at once,
// otherwise runs until its context ends and returns nil; Started, Done
// and Ready (nil while Run runs, ErrNotStarted before, ErrStopped or
// Run's error after) watch it, for a readiness probe. Drain is Run for
// tests and tools: it returns once nothing is left to do.
//
// MemoryStore keeps everything in memory; pgstore.NewSagaStore keeps it
// in PostgreSQL; sagatest.Run checks a Store.
package saga
