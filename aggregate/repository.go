package aggregate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/eskit/eskit/backoff"
	"github.com/eskit/eskit/eventstore"
	"github.com/eskit/eskit/snapshot"
	"github.com/eskit/eskit/telemetry"
)

// Result is the outcome of a handled command.
type Result[S, E any] struct {
	// StreamID is the stream the command was handled on.
	StreamID string
	// Version is the stream's version after the command's events (the
	// version the decision saw when the command caused no events).
	Version int64
	// Position is the feed position of the command's last event (zero
	// when the command caused no events). Queries can wait for it.
	Position eventstore.Position
	// Events are the events the command caused.
	Events []E
	// State is the state after the command's events.
	State S
	// Duplicate is true when the command (by its command ID) had already
	// been handled: nothing was appended and the result is the original
	// one.
	Duplicate bool
}

// EventID returns the ID of the index-th event (0-based) caused by the
// command with the given ID: the UUIDv5 of the index in the command ID's
// namespace.
func EventID(commandID uuid.UUID, index int) uuid.UUID {
	return uuid.NewSHA1(commandID, []byte(strconv.Itoa(index)))
}

// CommandIDReusedError reports a command ID whose events are stored in
// another stream than the one the command was sent to. It matches
// eventstore.ErrDuplicateEvent.
type CommandIDReusedError struct {
	CommandID uuid.UUID
	// StreamID is the stream the command was sent to.
	StreamID string
	// OtherStream is the stream that holds the command ID's events.
	OtherStream string
	// OtherRequest reports a command ID used before, on the same stream,
	// for another command (another type, or other fields): not a retry.
	OtherRequest bool
}

func (e *CommandIDReusedError) Error() string {
	if e.OtherRequest {
		return fmt.Sprintf("aggregate: command ID %s was already used for another command", e.CommandID)
	}
	return fmt.Sprintf("aggregate: command ID %s sent to stream %q was already used on stream %q",
		e.CommandID, e.StreamID, e.OtherStream)
}

// MetaCommandDigest is the metadata key of the digest of the command that
// caused an event (set when the command has an ID): a retry of the same
// command has the same digest, another command reusing the ID does not.
const MetaCommandDigest = "eskit.command_digest"

// CommandDigest returns a short hex SHA-256 of a command's Go type and JSON
// encoding (what MetaCommandDigest stores), or "" when it cannot be
// encoded: equal for a retry of the same command, different for another
// command.
func CommandDigest(cmd any) string {
	b, err := json.Marshal(cmd)
	if err != nil {
		return ""
	}
	h := sha256.New()
	h.Write([]byte(fmt.Sprintf("%T\x00", cmd)))
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Is makes errors.Is(err, eventstore.ErrDuplicateEvent) true.
func (e *CommandIDReusedError) Is(target error) bool { return target == eventstore.ErrDuplicateEvent }

// Repository loads, decides and appends the streams of one kind of
// aggregate. It is safe for concurrent use. Close it to drain the
// background snapshotter.
type Repository[S, C, E any] struct {
	store    eventstore.Store
	registry *eventstore.Registry
	decider  Decider[S, C, E]
	cfg      config
	snaps    *snapshotter   // nil without snapshots
	cache    *stateCache[S] // nil without a state cache
	tel      *loadTelemetry
}

// NewRepository returns a repository over store whose events E are encoded
// and decoded by registry (every concrete event type must be registered).
// S, C and E are inferred from the decider, a named type's methods
// included: aggregate.NewRepository(store, reg, AccountDecider{}).
func NewRepository[S, C, E any](store eventstore.Store, registry *eventstore.Registry, decider Decider[S, C, E], opts ...Option) (*Repository[S, C, E], error) {
	switch {
	case store == nil:
		return nil, errors.New("aggregate: nil event store")
	case registry == nil:
		return nil, errors.New("aggregate: nil registry")
	case decider == nil:
		return nil, errors.New("aggregate: nil decider")
	}
	cfg := config{
		maxRetries:      DefaultMaxRetries,
		backoff:         DefaultBackoff,
		codec:           snapshot.JSON{},
		schemaVersion:   1,
		queueSize:       DefaultSnapshotQueue,
		snapshotTimeout: DefaultSnapshotTimeout,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.backoff.Validate(); err != nil && cfg.backoff != (backoff.Policy{}) {
		return nil, fmt.Errorf("aggregate: %w", err)
	}
	if cfg.logger == nil {
		cfg.logger = slog.Default()
	}
	if cfg.codec == nil {
		cfg.codec = snapshot.JSON{}
	}
	if cfg.snapshotTimeout <= 0 {
		cfg.snapshotTimeout = DefaultSnapshotTimeout
	}
	if cfg.longReplay <= 0 {
		cfg.longReplay = DefaultLongReplay
	}
	r := &Repository[S, C, E]{store: store, registry: registry, decider: decider, cfg: cfg,
		tel: newLoadTelemetry(telemetry.NewConfig(cfg.telOpts...))}
	if cfg.snapshots != nil {
		if r.cfg.policy == nil {
			r.cfg.policy = snapshot.Never()
		}
		r.snaps = newSnapshotter(&r.cfg)
	}
	if cfg.cacheSize > 0 {
		r.cache = newStateCache[S](cfg.cacheSize)
	}
	return r, nil
}

// Close waits for the snapshots already requested to be saved and stops
// the background snapshotter. Commands can still be handled after Close,
// without snapshots being taken.
func (r *Repository[S, C, E]) Close() error {
	if r.snaps != nil {
		r.snaps.close()
	}
	return nil
}

// Flush waits until the snapshots requested before the call are saved (or
// have failed), or ctx ends.
func (r *Repository[S, C, E]) Flush(ctx context.Context) error {
	if r.snaps == nil {
		return nil
	}
	return r.snaps.flush(ctx)
}

// SnapshotStats reports the background snapshotter's counters.
func (r *Repository[S, C, E]) SnapshotStats() SnapshotStats {
	if r.snaps == nil {
		return SnapshotStats{}
	}
	return r.snaps.stats()
}

type loaded[S any] struct {
	state       S
	version     int64
	snapVersion int64 // version of the snapshot used, 0 if none
}

// Load returns the stream's current state and version: its snapshot (when
// there is one of the configured schema version that decodes) plus the
// events after it. A stream without events is the initial state at
// version 0.
//
// When the event store implements snapshot.EventLoader and accepts the
// repository's snapshot store (pgstore's Store with store.Snapshots()),
// the snapshot and the events after it come in one round trip; otherwise
// the repository loads the snapshot and then reads the events.
func (r *Repository[S, C, E]) Load(ctx context.Context, streamID string) (S, int64, error) {
	l, err := r.load(ctx, streamID, bound{})
	if err != nil {
		var zero S
		return zero, 0, err
	}
	return l.state, l.version, nil
}

// At is a point in a stream's history, for LoadAt: AtVersion or AtTime.
// The zero At is the stream's current state.
type At struct {
	version int64
	time    time.Time
	set     bool
}

// AtVersion is the stream as it was after its event at version v: the
// initial state for 0, the whole stream when it has fewer events.
func AtVersion(v int64) At { return At{version: v, set: true} }

// AtTime is the stream as it was at t: the longest run of its first events
// recorded at or before t (by eventstore.Record.RecordedAt, the store's
// clock; pgstore records the writing transaction's start). A load at a time
// replays from the stream's first event: snapshots do not tell when their
// events were recorded.
func AtTime(t time.Time) At { return At{time: t, set: true} }

// String describes the point.
func (a At) String() string {
	switch {
	case !a.set:
		return "now"
	case !a.time.IsZero():
		return "time " + a.time.Format(time.RFC3339Nano)
	}
	return "version " + strconv.FormatInt(a.version, 10)
}

// LoadAt returns the stream's state as it was at the given point of its
// history, and the version of the last event folded into it (below the
// version asked for when the stream is shorter; 0 when no event is
// folded). Snapshots at or below the version asked for are used; a newer
// one (the snapshot store keeps only the newest) means replaying from the
// first event. A past state is not cached and never snapshotted.
//
//	st, v, err := repo.LoadAt(ctx, "wallet-1", aggregate.AtVersion(10))
//	st, v, err = repo.LoadAt(ctx, "wallet-1", aggregate.AtTime(yesterday))
func (r *Repository[S, C, E]) LoadAt(ctx context.Context, streamID string, at At) (S, int64, error) {
	var zero S
	var b bound
	switch {
	case !at.set:
	case !at.time.IsZero():
		b.until = at.time
	case at.version < 0:
		return zero, 0, &eventstore.InvalidArgumentError{Field: "version", Reason: fmt.Sprintf("%d is negative", at.version)}
	case at.version == 0:
		return r.decider.Initial(), 0, nil
	default:
		b.version = at.version
	}
	l, err := r.load(ctx, streamID, b)
	if err != nil {
		return zero, 0, err
	}
	return l.state, l.version, nil
}

// bound ends a load before the stream's end; the zero bound loads all of it.
type bound struct {
	// version, above 0, is the last version folded.
	version int64
	// until, when set, ends the load before the first event recorded
	// after it (and the load uses no snapshot).
	until time.Time
}

func (b bound) zero() bool { return b.version == 0 && b.until.IsZero() }

// load builds the state of streamID up to the bound.
func (r *Repository[S, C, E]) load(ctx context.Context, streamID string, b bound) (loaded[S], error) {
	start := time.Now()
	l := loaded[S]{state: r.decider.Initial()}
	stale := false // a snapshot exists but cannot be used
	events, err := r.events(ctx, streamID, b, &l, &stale)
	if err != nil {
		return loaded[S]{}, err
	}
	replayed := 0
	for rec, err := range events {
		if err != nil {
			if errors.Is(err, eventstore.ErrStreamNotFound) {
				if l.snapVersion > 0 {
					r.cfg.logger.Warn("aggregate: snapshot of a stream without events ignored",
						"stream", streamID, "snapshot_version", l.snapVersion)
					l = loaded[S]{state: r.decider.Initial()}
				}
				r.tel.loaded(ctx, 0, false)
				return l, nil
			}
			return loaded[S]{}, fmt.Errorf("aggregate: load stream %q after version %d: %w", streamID, l.version, err)
		}
		if (b.version > 0 && rec.Version > b.version) || (!b.until.IsZero() && rec.RecordedAt.After(b.until)) {
			break
		}
		e, err := eventstore.DecodeAs[E](r.registry, rec)
		if err != nil {
			return loaded[S]{}, fmt.Errorf("aggregate: load stream %q: event at version %d: %w", streamID, rec.Version, err)
		}
		l.state = r.decider.Evolve(l.state, e)
		l.version = rec.Version
		replayed++
	}
	r.tel.loaded(ctx, replayed, l.snapVersion > 0)
	if replayed >= r.cfg.longReplay {
		r.cfg.logger.Debug("aggregate: load replayed a long tail", "stream", streamID, "events", replayed,
			"snapshot_version", l.snapVersion, "version", l.version, "stale_snapshot", stale,
			"snapshots", r.snaps != nil, "took", time.Since(start))
	}
	if stale && b.zero() && l.version > 0 {
		r.snaps.enqueue(streamID, l.version, l.state)
	}
	if r.cache != nil && b.zero() {
		r.cache.put(cachedState[S]{stream: streamID, state: l.state, version: l.version, snapVersion: l.snapVersion})
	}
	return l, nil
}

// events returns the events to fold into l: the stream's events after its
// usable snapshot, whose state and version it puts into l (stale reports a
// snapshot that exists but cannot be used). With an event store that
// loads snapshots itself (snapshot.EventLoader) that is one round trip;
// otherwise the snapshot store's Load, then ReadStream.
func (r *Repository[S, C, E]) events(ctx context.Context, streamID string, b bound, l *loaded[S], stale *bool) (iter.Seq2[eventstore.Record, error], error) {
	if !b.until.IsZero() {
		// A load until a time needs each event's recording time, which
		// an EventLoader does not read, and uses no snapshot.
		return r.store.ReadStream(ctx, streamID, 1), nil
	}
	useSnaps := r.snaps != nil
	if el, ok := r.store.(snapshot.EventLoader); ok {
		opts := snapshot.LoadOptions{SchemaVersion: r.cfg.schemaVersion, MaxVersion: b.version}
		var snaps snapshot.Store
		if useSnaps {
			snaps = r.cfg.snapshots
			opts.Use = func(snap snapshot.Snapshot) bool {
				state, ok, unusable := r.decodeSnapshot(streamID, snap)
				*stale = unusable
				if ok {
					*l = loaded[S]{state: state, version: snap.Version, snapVersion: snap.Version}
				}
				return ok
			}
		}
		seq, err := el.LoadWithSnapshot(ctx, snaps, streamID, opts)
		if err == nil {
			return seq, nil
		}
		if !errors.Is(err, errors.ErrUnsupported) {
			return nil, fmt.Errorf("aggregate: load stream %q: %w", streamID, err)
		}
	}
	if useSnaps {
		state, version, ok, unusable := r.loadSnapshot(ctx, streamID)
		*stale = unusable
		if ok && (b.version == 0 || version <= b.version) {
			*l = loaded[S]{state: state, version: version, snapVersion: version}
		}
	}
	return r.store.ReadStream(ctx, streamID, l.version+1), nil
}

// loadSnapshot returns the stream's usable snapshot, if any; unusable
// reports a snapshot that exists but has another schema version or does
// not decode.
func (r *Repository[S, C, E]) loadSnapshot(ctx context.Context, streamID string) (state S, version int64, ok, unusable bool) {
	snap, err := r.cfg.snapshots.Load(ctx, streamID)
	switch {
	case errors.Is(err, snapshot.ErrNotFound):
		return state, 0, false, false
	case err != nil:
		r.cfg.logger.Warn("aggregate: cannot load snapshot, replaying the stream", "stream", streamID, "error", err)
		return state, 0, false, false
	}
	state, ok, unusable = r.decodeSnapshot(streamID, snap)
	if !ok {
		return state, 0, false, unusable
	}
	return state, snap.Version, true, false
}

// decodeSnapshot decodes a snapshot's state; unusable reports one of
// another schema version or one that does not decode.
func (r *Repository[S, C, E]) decodeSnapshot(streamID string, snap snapshot.Snapshot) (state S, ok, unusable bool) {
	if snap.SchemaVersion != r.cfg.schemaVersion {
		r.cfg.logger.Info("aggregate: snapshot of another schema version ignored", "stream", streamID,
			"snapshot_schema_version", snap.SchemaVersion, "schema_version", r.cfg.schemaVersion)
		return state, false, true
	}
	if err := r.cfg.codec.Unmarshal(snap.State, &state); err != nil {
		r.cfg.logger.Warn("aggregate: snapshot does not decode, replaying the stream", "stream", streamID,
			"snapshot_version", snap.Version, "error", err)
		var zero S
		return zero, false, true
	}
	return state, true, false
}

// Handle decides cmd on the stream's current state and appends the events
// with the version the decision saw. On a concurrency conflict it reloads
// and decides again, up to the configured number of retries, then returns
// a *RetriesExhaustedError (matching eventstore.ErrConcurrency, and marked
// as retried so that commandbus.Retry does not retry it again). A rejected
// command returns a *RejectedError wrapping the decider's error. A command
// that causes no events appends nothing.
//
// With WithCommandID, a command that was already handled is answered with
// its original result (Duplicate set), even when the decider would now
// decide differently.
//
// With WithStateCache, Handle first decides on the cached state (or, for a
// stream it has not seen, on the initial state) and appends with that
// state's version, skipping the load; only a successful append settles the
// command that way, every other outcome falls back to the steps above.
func (r *Repository[S, C, E]) Handle(ctx context.Context, streamID string, cmd C, opts ...HandleOption) (Result[S, E], error) {
	var call callConfig
	for _, o := range opts {
		o(&call)
	}
	md := r.metadata(ctx, call)
	hasID := call.commandID != uuid.Nil
	digest := ""
	if hasID {
		// Stored with the events, so that a command ID reused for another
		// request is told from a retry of the same one.
		if digest = CommandDigest(cmd); digest != "" {
			md[MetaCommandDigest] = digest
		}
	}
	if r.cache != nil {
		res, done, err := r.speculate(ctx, streamID, cmd, md, call.commandID)
		if done {
			return res, err
		}
	}
	for attempt := 0; ; attempt++ {
		l, err := r.load(ctx, streamID, bound{})
		if err != nil {
			return Result[S, E]{}, err
		}
		events, derr := r.decider.Decide(l.state, cmd)
		if derr != nil || len(events) == 0 {
			if hasID {
				// The command may have been handled before, and the
				// decider now sees the state it caused.
				res, found, err := r.lookup(ctx, streamID, call.commandID, digest)
				var reused *CommandIDReusedError
				if err != nil && (!errors.As(err, &reused) || reused.OtherRequest) {
					return Result[S, E]{}, err
				}
				if found {
					return res, nil
				}
			}
			if derr != nil {
				return Result[S, E]{}, &RejectedError{StreamID: streamID, Version: l.version, Err: derr}
			}
			return Result[S, E]{StreamID: streamID, Version: l.version, State: l.state}, nil
		}
		evs, err := r.encode(events, md, call.commandID)
		if err != nil {
			return Result[S, E]{}, err
		}
		ar, err := r.store.Append(ctx, streamID, eventstore.Exact(l.version), evs...)
		switch {
		case err == nil && ar.Duplicate:
			// Every event ID is stored already: the command was handled.
			res, found, err := r.lookup(ctx, streamID, call.commandID, digest)
			if err != nil {
				return Result[S, E]{}, err
			}
			if !found {
				return Result[S, E]{}, fmt.Errorf("aggregate: stream %q: the store reports command %s as a duplicate but its events cannot be read", streamID, call.commandID)
			}
			return res, nil
		case err == nil:
			return r.appended(streamID, l, events, ar), nil
		case hasID && errors.Is(err, eventstore.ErrDuplicateEvent):
			// Some event IDs are stored: the command was handled and now
			// decides differently, or its ID was used elsewhere.
			res, found, lerr := r.lookup(ctx, streamID, call.commandID, digest)
			if lerr != nil {
				return Result[S, E]{}, lerr
			}
			if found {
				return res, nil
			}
			return Result[S, E]{}, fmt.Errorf("aggregate: append to stream %q: %w", streamID, err)
		case errors.Is(err, eventstore.ErrConcurrency):
			if r.cache != nil {
				r.cache.drop(streamID)
			}
			if attempt >= r.cfg.maxRetries {
				return Result[S, E]{}, &RetriesExhaustedError{StreamID: streamID, Attempts: attempt + 1, Err: err}
			}
			r.cfg.logger.Debug("aggregate: concurrency conflict, retrying", "stream", streamID, "attempt", attempt+1, "error", err)
			if err := backoff.Sleep(ctx, r.cfg.backoff.Next(attempt+1)); err != nil {
				return Result[S, E]{}, err
			}
		default:
			return Result[S, E]{}, fmt.Errorf("aggregate: append to stream %q: %w", streamID, err)
		}
	}
}

// appended completes a successful append of events decided on l: it folds
// the new state, asks the snapshot policy and refreshes the state cache.
func (r *Repository[S, C, E]) appended(streamID string, l loaded[S], events []E, ar eventstore.AppendResult) Result[S, E] {
	state := Fold(r.decider, l.state, events...)
	version := ar.Version()
	snapVersion := l.snapVersion
	if r.snaps != nil && r.cfg.policy.ShouldSnapshot(snapshot.Point{
		StreamID: streamID, SnapshotVersion: l.snapVersion, PrevVersion: l.version, Version: version,
	}) {
		r.snaps.enqueue(streamID, version, state)
		snapVersion = version
	}
	if r.cache != nil {
		r.cache.put(cachedState[S]{stream: streamID, state: state, version: version, snapVersion: snapVersion})
	}
	return Result[S, E]{StreamID: streamID, Version: version, Position: ar.Position, Events: events, State: state}
}

// speculate handles cmd in one round trip when the state cache allows it:
// it decides on the stream's cached state, or on the initial state when
// the stream is not cached (guessing that it is new), and appends with the
// version that state is at. done reports that the command was handled
// (res or err is the outcome). When done is false nothing was written and
// the guess proved nothing: the decision rejected the command or caused no
// events, or the append met a conflict or the command ID's stored events.
// Handle must then take the ordinary path, which alone decides on a
// freshly loaded state and so alone may reject a command, accept it
// without events or answer it as a duplicate.
func (r *Repository[S, C, E]) speculate(ctx context.Context, streamID string, cmd C, md eventstore.Metadata, commandID uuid.UUID) (res Result[S, E], done bool, err error) {
	c, ok := r.cache.get(streamID)
	if !ok {
		c = cachedState[S]{stream: streamID, state: r.decider.Initial()}
	}
	events, derr := r.decider.Decide(c.state, cmd)
	if derr != nil || len(events) == 0 {
		return Result[S, E]{}, false, nil
	}
	evs, err := r.encode(events, md, commandID)
	if err != nil {
		return Result[S, E]{}, false, nil
	}
	ar, err := r.store.Append(ctx, streamID, eventstore.Exact(c.version), evs...)
	switch {
	case err == nil && !ar.Duplicate:
		l := loaded[S]{state: c.state, version: c.version, snapVersion: c.snapVersion}
		return r.appended(streamID, l, events, ar), true, nil
	case err == nil, errors.Is(err, eventstore.ErrConcurrency), errors.Is(err, eventstore.ErrDuplicateEvent):
		r.cache.drop(streamID)
		return Result[S, E]{}, false, nil
	default:
		r.cache.drop(streamID)
		return Result[S, E]{}, true, fmt.Errorf("aggregate: append to stream %q: %w", streamID, err)
	}
}

// metadata merges the context's metadata, the call's, the context's trace
// context and the command ID as causation (and default correlation) ID.
func (r *Repository[S, C, E]) metadata(ctx context.Context, call callConfig) eventstore.Metadata {
	var md eventstore.Metadata
	if r.cfg.metadataFrom != nil {
		md = r.cfg.metadataFrom(ctx).Clone()
	}
	if len(call.metadata) > 0 {
		if md == nil {
			md = make(eventstore.Metadata, len(call.metadata))
		}
		for k, v := range call.metadata {
			md[k] = v
		}
	}
	if !r.cfg.noTraceContext {
		md = telemetry.InjectMetadata(ctx, md)
	}
	if call.commandID != uuid.Nil {
		if md == nil {
			md = eventstore.Metadata{}
		}
		id := call.commandID.String()
		if md[eventstore.MetaCausationID] == "" {
			md[eventstore.MetaCausationID] = id
		}
		if md[eventstore.MetaCorrelationID] == "" {
			md[eventstore.MetaCorrelationID] = id
		}
	}
	return md
}

func (r *Repository[S, C, E]) encode(events []E, md eventstore.Metadata, commandID uuid.UUID) ([]eventstore.Event, error) {
	out := make([]eventstore.Event, len(events))
	for i, e := range events {
		ev, err := r.registry.Encode(e, md)
		if err != nil {
			return nil, fmt.Errorf("aggregate: encode event %d (%T): %w", i, e, err)
		}
		if commandID != uuid.Nil {
			ev.ID = EventID(commandID, i)
		}
		out[i] = ev
	}
	return out, nil
}

// lookup rebuilds the result of an earlier handling of the command, from
// its stored events. found is false when the command caused no events on
// the stream; a *CommandIDReusedError reports its events in another stream.
func (r *Repository[S, C, E]) lookup(ctx context.Context, streamID string, commandID uuid.UUID, digest string) (Result[S, E], bool, error) {
	first, err := r.store.ReadEvent(ctx, EventID(commandID, 0))
	if errors.Is(err, eventstore.ErrEventNotFound) {
		return Result[S, E]{}, false, nil
	}
	if err != nil {
		return Result[S, E]{}, false, fmt.Errorf("aggregate: look up command %s: %w", commandID, err)
	}
	if first.StreamID != streamID {
		return Result[S, E]{}, false, &CommandIDReusedError{CommandID: commandID, StreamID: streamID, OtherStream: first.StreamID}
	}
	if stored := first.Metadata[MetaCommandDigest]; digest != "" && stored != "" && stored != digest {
		return Result[S, E]{}, false, &CommandIDReusedError{CommandID: commandID, StreamID: streamID, OtherStream: first.StreamID, OtherRequest: true}
	}
	res := Result[S, E]{StreamID: streamID, Duplicate: true}
	for rec, err := range r.store.ReadStream(ctx, streamID, first.Version) {
		if err != nil {
			return Result[S, E]{}, false, fmt.Errorf("aggregate: look up command %s on stream %q: %w", commandID, streamID, err)
		}
		if rec.ID != EventID(commandID, len(res.Events)) {
			break
		}
		e, err := eventstore.DecodeAs[E](r.registry, rec)
		if err != nil {
			return Result[S, E]{}, false, fmt.Errorf("aggregate: look up command %s on stream %q: event %s at version %d: %w",
				commandID, streamID, rec.ID, rec.Version, err)
		}
		res.Events = append(res.Events, e)
		res.Version = rec.Version
		res.Position = rec.Position
	}
	if len(res.Events) == 0 {
		return Result[S, E]{}, false, fmt.Errorf("aggregate: look up command %s: event %s not found in stream %q at version %d",
			commandID, first.ID, streamID, first.Version)
	}
	l, err := r.load(ctx, streamID, bound{version: res.Version})
	if err != nil {
		return Result[S, E]{}, false, err
	}
	res.State = l.state
	return res, true, nil
}
