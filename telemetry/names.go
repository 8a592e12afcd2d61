package telemetry

// Span names.
const (
	// SpanCommand is the span of one command dispatch (commandbus).
	SpanCommand = "command"
	// SpanQuery is the span of one query (querybus).
	SpanQuery = "query"
	// SpanAppend is the span of one append to the event store.
	SpanAppend = "eventstore.append"
	// SpanPublish is the producer span of one record published by the relay.
	SpanPublish = "outbox.publish"
	// SpanApply is the consumer span of one record applied by a projection.
	SpanApply = "projection.apply"
)

// Span attribute keys.
const (
	AttrCommand     = "eskit.command"        // command type
	AttrCommandID   = "eskit.command.id"     // command ID
	AttrQuery       = "eskit.query"          // query type
	AttrOutcome     = "eskit.outcome"        // ok, duplicate, rejected, conflict, error
	AttrStreams     = "eskit.append.streams" // streams written by an append
	AttrEvents      = "eskit.append.events"  // events in an append
	AttrStreamID    = "eskit.stream.id"
	AttrEventType   = "eskit.event.type"
	AttrEventID     = "eskit.event.id"
	AttrVersion     = "eskit.event.version"
	AttrPosition    = "eskit.position"
	AttrProjection  = "eskit.projection"
	AttrRelay       = "eskit.relay"
	AttrAttempts    = "eskit.attempts"
	AttrParked      = "eskit.parked"
	AttrReplay      = "eskit.replay"
	AttrDestination = "messaging.destination.name"
	AttrMsgSystem   = "messaging.system"
	AttrDBSystem    = "db.system.name"
)

// Metric attribute keys: short, as Prometheus labels are.
const (
	LabelCommand    = "command"
	LabelQuery      = "query"
	LabelOutcome    = "outcome"
	LabelProjection = "projection"
	// LabelPartition is the projection partition of a per-partition gauge.
	LabelPartition = "partition"
	LabelRelay     = "relay"
	// LabelSnapshot tells whether a load started from a snapshot: "used"
	// or "none".
	LabelSnapshot = "snapshot"
)

// Outcome values of AttrOutcome and LabelOutcome.
const (
	OutcomeOK        = "ok"
	OutcomeDuplicate = "duplicate"
	OutcomeRejected  = "rejected"
	OutcomeConflict  = "conflict"
	OutcomeError     = "error"
	// Outcomes of queries that failed for the caller's reasons or for a
	// while: the thing asked for does not exist, the query was invalid,
	// the read model cannot answer for now (being rebuilt, or behind a
	// read-your-writes deadline).
	OutcomeNotFound    = "not_found"
	OutcomeInvalid     = "invalid"
	OutcomeUnavailable = "unavailable"
	// OutcomeUnknown: the write may or may not have been applied
	// (eventstore.ErrOutcomeUnknown).
	OutcomeUnknown = "unknown"
)

// Metric instrument names. The comment gives the Prometheus name the
// exporter derives (units become suffixes, counters end in _total).
const (
	// MetricAppendEvents counts events appended (duplicates of stored
	// events excluded): eskit_append_events_total.
	MetricAppendEvents = "eskit.append.events"
	// MetricAppendDuration is the latency of appends, by outcome:
	// eskit_append_duration_seconds.
	MetricAppendDuration = "eskit.append.duration"
	// MetricAppendConflicts counts appends refused by a concurrency
	// conflict: eskit_append_conflicts_total.
	MetricAppendConflicts = "eskit.append.conflicts"
	// MetricRelayPublished counts records published, acknowledged and
	// checkpointed by the relay: eskit_relay_published_total.
	MetricRelayPublished = "eskit.relay.published"
	// MetricRelayLagEvents is how many records the relay trails the feed's
	// head by: eskit_relay_lag_events.
	MetricRelayLagEvents = "eskit.relay.lag.events"
	// MetricRelayLag is how long the oldest unpublished record has waited:
	// eskit_relay_lag_seconds.
	MetricRelayLag = "eskit.relay.lag"
	// MetricRelayLeader is 1 while the relay leads, 0 while it stands by:
	// eskit_relay_leader.
	MetricRelayLeader = "eskit.relay.leader"
	// MetricRelayProgressAge is how long ago the relay's leader last
	// advanced (outbox Stats.LeaderProgressAt), in seconds: on a standby it
	// grows while the leader is stalled (alert on it together with
	// MetricRelayLagEvents): eskit_relay_leader_progress_age_seconds.
	MetricRelayProgressAge = "eskit.relay.leader.progress_age"
	// MetricProjectionApplied counts records applied by a projection:
	// eskit_projection_applied_total.
	MetricProjectionApplied = "eskit.projection.applied"
	// MetricProjectionParkedTotal counts records parked by a projection:
	// eskit_projection_parked_records_total.
	MetricProjectionParkedTotal = "eskit.projection.parked.records"
	// MetricProjectionLagEvents is how many records a projection trails
	// the feed's head by: eskit_projection_lag_events.
	MetricProjectionLagEvents = "eskit.projection.lag.events"
	// MetricProjectionLag is how long ago the projection's last applied
	// record was written, while it is behind: eskit_projection_lag_seconds.
	MetricProjectionLag = "eskit.projection.lag"
	// MetricProjectionParked is the number of records parked now:
	// eskit_projection_parked.
	MetricProjectionParked = "eskit.projection.parked"
	// MetricCommands counts dispatched commands by type and outcome:
	// eskit_commands_total.
	MetricCommands = "eskit.commands"
	// MetricCommandDuration is the latency of commands by type and outcome:
	// eskit_command_duration_seconds.
	MetricCommandDuration = "eskit.command.duration"
	// MetricQueries counts queries by type and outcome: eskit_queries_total.
	MetricQueries = "eskit.queries"
	// MetricQueryDuration is the latency of queries (read-your-writes wait
	// included): eskit_query_duration_seconds.
	MetricQueryDuration = "eskit.query.duration"
	// MetricLoadEvents is the number of events the aggregate repository
	// replayed per load of a stream (after its snapshot, if one was
	// used), by LabelSnapshot: eskit_load_events. A tail that keeps
	// growing means snapshots are not taken or not saved.
	MetricLoadEvents = "eskit.load.events"
)

// loadEventBuckets backs LoadEventBuckets.
var loadEventBuckets = [...]float64{0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 50000, 100000}

// LoadEventBuckets returns the explicit bucket bounds of MetricLoadEvents:
// from 0 to 100,000 events replayed.
func LoadEventBuckets() []float64 {
	b := loadEventBuckets
	return b[:]
}

// durationBuckets backs DurationBuckets.
var durationBuckets = [...]float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// DurationBuckets returns the explicit bucket bounds, in seconds, of eskit's
// latency histograms: from 100µs to 10s (the SDK's default bounds start at
// 5ms, too coarse for appends).
func DurationBuckets() []float64 {
	b := durationBuckets
	return b[:]
}
