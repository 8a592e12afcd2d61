package outbox

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eskit/eskit/natsevent"
)

// Stream defaults.
const (
	// DefaultDuplicateWindow is how long JetStream remembers message IDs for
	// de-duplication. A relay that fails over or retries within it produces
	// no visible duplicates.
	DefaultDuplicateWindow = 2 * time.Minute
	// DefaultMaxAge is how long the stream keeps messages. The event store
	// stays the source of truth: projections rebuild from its feed.
	DefaultMaxAge = 7 * 24 * time.Hour
)

// StreamConfig describes the JetStream stream the relay publishes to. Zero
// fields take defaults (see WithDefaults). It is what eskit needs: an
// existing stream that already offers more keeps it (see Reconcile).
type StreamConfig struct {
	// Name is the stream's name; default natsevent.StreamName(Prefix), the
	// prefix upper-cased, which is what every part of a deployment derives
	// from its prefix: leave it empty.
	Name string
	// Prefix is the subject prefix; the stream captures "<prefix>.>".
	// Default natsevent.DefaultPrefix.
	Prefix string
	// Description is free text shown by tools.
	Description string
	// Storage is file (default) or memory storage. JetStream cannot change
	// it: an existing stream keeps its storage, and only an explicit
	// MemoryStorage on a file stream is a conflict.
	Storage jetstream.StorageType
	// Replicas is the number of replicas in a cluster; default 1. An
	// existing stream with more keeps them (see Reconcile).
	Replicas int
	// DuplicateWindow is the de-duplication window; default
	// DefaultDuplicateWindow. An existing stream's longer window stays.
	DuplicateWindow time.Duration
	// MaxAge is how long messages are kept; default DefaultMaxAge, negative
	// means forever. An existing stream that keeps messages longer keeps
	// them longer.
	MaxAge time.Duration
	// MaxBytes limits the stream's size. Zero: no limit on a new stream,
	// and an existing stream's limit stays. Negative: no limit, and an
	// existing stream's limit is lifted. Positive: this limit, or an
	// existing stream's larger one.
	MaxBytes int64

	// Compression compresses stored messages (server 2.10 or newer).
	Compression jetstream.StoreCompression
	// Metadata is stored with the stream (server 2.10 or newer).
	Metadata map[string]string
	// AllowMsgTTL lets messages carry their own TTL (server 2.11 or newer).
	AllowMsgTTL bool
}

// WithDefaults returns c with its zero fields set to the defaults.
func (c StreamConfig) WithDefaults() StreamConfig {
	if c.Prefix == "" {
		c.Prefix = natsevent.DefaultPrefix
	}
	if c.Name == "" {
		c.Name = natsevent.StreamName(c.Prefix)
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.DuplicateWindow <= 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	if c.MaxAge == 0 {
		c.MaxAge = DefaultMaxAge
	}
	return c
}

// Features returns the server features the configuration needs.
func (c StreamConfig) Features() []natsevent.Feature {
	fs := []natsevent.Feature{natsevent.FeatureJetStream}
	if c.Compression != jetstream.NoCompression {
		fs = append(fs, natsevent.FeatureCompression)
	}
	if len(c.Metadata) > 0 {
		fs = append(fs, natsevent.FeatureStreamMetadata)
	}
	if c.AllowMsgTTL {
		fs = append(fs, natsevent.FeatureMsgTTL)
	}
	return fs
}

// Validate checks the configuration (after defaults) without a server.
func (c StreamConfig) Validate() error {
	c = c.WithDefaults()
	if err := natsevent.ValidatePrefix(c.Prefix); err != nil {
		return err
	}
	if strings.ContainsAny(c.Name, " \t\r\n.*>/\\") {
		return fmt.Errorf("outbox: stream name %q: must not contain whitespace, '.', '*', '>', '/' or '\\'", c.Name)
	}
	if c.MaxAge > 0 && c.DuplicateWindow > c.MaxAge {
		return fmt.Errorf("outbox: duplicate window %s exceeds max age %s", c.DuplicateWindow, c.MaxAge)
	}
	return nil
}

// Check validates the configuration and checks that a server of the given
// version supports every feature it uses.
func (c StreamConfig) Check(serverVersion string) error {
	if err := c.Validate(); err != nil {
		return err
	}
	return natsevent.CheckServer(serverVersion, c.Features()...)
}

// JetStreamConfig returns the jetstream stream configuration for c (after
// defaults).
func (c StreamConfig) JetStreamConfig() jetstream.StreamConfig {
	c = c.WithDefaults()
	sc := jetstream.StreamConfig{
		Name:              c.Name,
		Description:       c.Description,
		Subjects:          []string{natsevent.PrefixFilter(c.Prefix)},
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		Storage:           c.Storage,
		Replicas:          c.Replicas,
		Duplicates:        c.DuplicateWindow,
		MaxMsgs:           -1,
		MaxBytes:          -1,
		MaxConsumers:      -1,
		MaxMsgsPerSubject: -1,
		Compression:       c.Compression,
		Metadata:          c.Metadata,
		AllowMsgTTL:       c.AllowMsgTTL,
	}
	if c.MaxAge > 0 {
		sc.MaxAge = c.MaxAge
	}
	if c.MaxBytes > 0 {
		sc.MaxBytes = c.MaxBytes
	}
	return sc
}

// ErrStreamConflict reports an existing stream with a setting eskit needs
// and EnsureStream cannot (or will not) change; see StreamConflictError.
var ErrStreamConflict = errors.New("outbox: stream conflicts with what eskit needs")

// StreamConflictError reports one setting of an existing stream that eskit
// cannot work with. It matches ErrStreamConflict. EnsureStream returns all
// conflicts of a stream at once (joined with errors.Join, so errors.As finds
// the first).
type StreamConflictError struct {
	// Stream is the stream's name.
	Stream string
	// Setting names the setting as JetStream's configuration does
	// ("retention", "storage", "discard", "subjects", ...).
	Setting string
	// Existing is the stream's value, Wanted what eskit needs.
	Existing, Wanted any
	// Reason says why eskit needs it.
	Reason string
}

func (e *StreamConflictError) Error() string {
	return fmt.Sprintf("outbox: stream %s: %s is %v, eskit needs %v: %s", e.Stream, e.Setting, e.Existing, e.Wanted, e.Reason)
}

// Is makes errors.Is(err, ErrStreamConflict) true.
func (e *StreamConflictError) Is(target error) bool { return target == ErrStreamConflict }

// Reconcile computes the update of an existing stream that gives eskit what
// c asks for without weakening anything the stream already has: the
// stronger of both, setting by setting. It returns the configuration to
// update the stream to and whether it differs from existing; when it does
// not, there is nothing to write. A setting eskit needs and cannot get is a
// *StreamConflictError (several are joined).
//
// The rules, for c after WithDefaults:
//   - Replicas: the larger of both; an operator's R3 stays R3.
//   - Storage cannot change in JetStream: it stays. c.Storage's zero value
//     (file) means "any", so only an explicit MemoryStorage on a file
//     stream is a conflict.
//   - MaxAge: whichever keeps messages longer (zero, forever, is longest).
//     MaxBytes: when c sets it, whichever keeps more (no limit is most);
//     when c leaves it zero, the stream's own limit stays.
//   - MaxMsgs, MaxMsgsPerSubject, MaxConsumers, MaxMsgSize and every other
//     setting c has no field for (placement, sources, republish, direct
//     get, deny delete/purge, sealed, ...) stay as they are.
//   - Duplicates: at least c.DuplicateWindow.
//   - Subjects: must capture "<prefix>.>". If no subject covers it, it is
//     added; the stream's other subjects stay, except those it covers
//     (JetStream refuses overlapping subjects in one stream, and their
//     messages are still captured). A subject that overlaps it only in part
//     is a conflict.
//   - Description, Compression and Metadata entries that c sets are
//     applied; AllowMsgTTL is turned on when c asks for it (it can never be
//     turned off).
//
// Conflicts, each with the reason: retention other than limits (every
// projection consumes the stream independently, and one added later must
// still find the messages); a mirror (it accepts no publishes); no-ack (the
// relay moves its checkpoint only past acknowledged messages); a counter
// stream (it refuses plain messages); a subject transform that rewrites the
// relay's subjects (natsevent.DecodeMsg and the filters would no longer read them);
// and discard new with a message, byte or per-subject (discard new per
// subject) limit on a stream that is not sealed. Discard new loses nothing,
// but a full stream then refuses every new event: the relay stops until
// messages expire and the whole live read side stops with it, which turns a
// disk limit into an outage. Discard old only drops messages the event
// store still has and projections fill from it, so eskit requires it once
// limits can fill the stream. A sealed stream, or one that denies deletes
// or purges, is left as it is (a sealed stream refuses the relay's
// publishes with the server's own error).
func (c StreamConfig) Reconcile(existing jetstream.StreamConfig) (jetstream.StreamConfig, bool, error) {
	c = c.WithDefaults()
	out := existing
	out.Subjects = slices.Clone(existing.Subjects)
	out.Metadata = maps.Clone(existing.Metadata)
	changed := false
	var conflicts []error
	conflict := func(setting string, have, want any, reason string) {
		conflicts = append(conflicts, &StreamConflictError{Stream: existing.Name, Setting: setting, Existing: have, Wanted: want, Reason: reason})
	}
	if existing.Name != c.Name {
		return jetstream.StreamConfig{}, false, fmt.Errorf("outbox: reconcile stream %s with the configuration of stream %s", existing.Name, c.Name)
	}

	if existing.Retention != jetstream.LimitsPolicy {
		conflict("retention", existing.Retention, jetstream.LimitsPolicy,
			"every projection consumes the stream independently, and one added later must still find the messages")
	}
	if existing.Mirror != nil {
		conflict("mirror", existing.Mirror.Name, "none", "a mirror accepts no publishes")
	}
	if existing.NoAck {
		conflict("no_ack", true, false, "the relay moves its checkpoint only past acknowledged messages")
	}
	if existing.AllowMsgCounter {
		conflict("allow_msg_counter", true, false, "a counter stream refuses plain messages")
	}
	if c.Storage == jetstream.MemoryStorage && existing.Storage != jetstream.MemoryStorage {
		conflict("storage", existing.Storage, c.Storage,
			"JetStream cannot change a stream's storage: recreate the stream, or leave the storage unset to keep it")
	}

	all := natsevent.PrefixFilter(c.Prefix)
	if tr := existing.SubjectTransform; tr != nil {
		src := tr.Source
		if src == "" {
			src = ">"
		}
		if natsevent.FiltersCollide(src, all) {
			conflict("subject_transform", tr.Source+" -> "+tr.Destination, "none",
				"the relay's subjects would be stored rewritten, and natsevent.DecodeMsg and the subject filters could not read them")
		}
	}
	if !slices.ContainsFunc(existing.Subjects, func(s string) bool { return natsevent.FilterSubset(all, s) }) {
		kept := make([]string, 0, len(existing.Subjects)+1)
		for _, s := range existing.Subjects {
			switch {
			case natsevent.FilterSubset(s, all):
				// Covered by all: dropped, its messages are still captured.
			case natsevent.FiltersCollide(s, all):
				conflict("subjects", existing.Subjects, all,
					fmt.Sprintf("subject %q overlaps %q in part, and JetStream refuses overlapping subjects in one stream", s, all))
				kept = append(kept, s)
			default:
				kept = append(kept, s)
			}
		}
		out.Subjects = append(kept, all)
		changed = true
	}

	if c.Replicas > out.Replicas {
		out.Replicas, changed = c.Replicas, true
	}
	wantAge := max(c.MaxAge, 0) // negative: forever, which JetStream spells 0
	if out.MaxAge != 0 && (wantAge == 0 || wantAge > out.MaxAge) {
		out.MaxAge, changed = wantAge, true
	}
	if c.MaxBytes != 0 {
		want := c.MaxBytes
		if want < 0 {
			want = -1
		}
		if out.MaxBytes > 0 && (want < 0 || want > out.MaxBytes) {
			out.MaxBytes, changed = want, true
		}
	}
	if c.DuplicateWindow > out.Duplicates {
		out.Duplicates, changed = c.DuplicateWindow, true
	}
	if !out.Sealed && out.Discard == jetstream.DiscardNew &&
		(out.MaxMsgs > 0 || out.MaxBytes > 0 || out.DiscardNewPerSubject && out.MaxMsgsPerSubject > 0) {
		conflict("discard", out.Discard, jetstream.DiscardOld,
			"with discard new a full stream refuses every new event, which stops the relay and the live read side; "+
				"discard old only drops messages the event store still has")
	}

	if c.Description != "" && c.Description != out.Description {
		out.Description, changed = c.Description, true
	}
	if c.Compression != jetstream.NoCompression && c.Compression != out.Compression {
		out.Compression, changed = c.Compression, true
	}
	for k, v := range c.Metadata {
		if have, ok := out.Metadata[k]; !ok || have != v {
			if out.Metadata == nil {
				out.Metadata = make(map[string]string, len(c.Metadata))
			}
			out.Metadata[k], changed = v, true
		}
	}
	if c.AllowMsgTTL && !out.AllowMsgTTL {
		out.AllowMsgTTL, changed = true, true
	}

	if len(conflicts) > 0 {
		return jetstream.StreamConfig{}, false, errors.Join(conflicts...)
	}
	return out, changed, nil
}

// EnsureStream makes sure the relay's stream exists and gives eskit what cfg
// asks for; it is idempotent. A missing stream is created from cfg. An
// existing one is never weakened: its configuration is merged with cfg (see
// StreamConfig.Reconcile), so an operator's replicas, retention limits and
// extra subjects survive every relay start; the stream is updated only when
// the merge changes something, so an unchanged restart writes nothing. A
// setting eskit needs and cannot get fails with an error matching
// ErrStreamConflict (*StreamConflictError).
//
// It first checks the connected server's version and refuses (with an error
// matching natsevent.ErrUnsupported) settings the server is too old for, since older
// servers silently ignore them.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	version, err := natsevent.ConnectedVersion(ctx, js)
	if err != nil {
		return nil, err
	}
	if err := cfg.Check(version); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	for attempt := 0; ; attempt++ {
		s, err := js.Stream(ctx, cfg.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			s, err = js.CreateStream(ctx, cfg.JetStreamConfig())
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) && attempt == 0 {
				continue // created meanwhile by someone else: merge with it
			}
			if err != nil {
				return nil, fmt.Errorf("outbox: create stream %s: %w", cfg.Name, err)
			}
			return s, nil
		}
		if err != nil {
			return nil, fmt.Errorf("outbox: look up stream %s: %w", cfg.Name, err)
		}
		update, changed, err := cfg.Reconcile(s.CachedInfo().Config)
		if err != nil {
			return nil, err
		}
		if !changed {
			return s, nil
		}
		if s, err = js.UpdateStream(ctx, update); err != nil {
			return nil, fmt.Errorf("outbox: update stream %s: %w", cfg.Name, err)
		}
		return s, nil
	}
}
