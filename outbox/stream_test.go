package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/internal/infra/natstest"
	"github.com/eskit/eskit/internal/infra/testsvc"
	"github.com/eskit/eskit/natsevent"
	"github.com/eskit/eskit/outbox"
)

func TestEnsureStreamDefaultsAndIdempotence(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := natstest.Start(t)
	js := natstest.JetStream(t, srv.URL())

	s, err := outbox.EnsureStream(ctx, js, outbox.StreamConfig{})
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, "ESKIT", info.Config.Name)
	require.Equal(t, []string{"eskit.>"}, info.Config.Subjects)
	require.Equal(t, jetstream.FileStorage, info.Config.Storage)
	require.Equal(t, outbox.DefaultDuplicateWindow, info.Config.Duplicates)
	require.Equal(t, outbox.DefaultMaxAge, info.Config.MaxAge)
	require.Equal(t, 1, info.Config.Replicas)

	_, err = js.Publish(ctx, natsevent.Subject("eskit", "a-1", "T"), []byte("x"))
	require.NoError(t, err)

	// Again with the same settings: nothing changes, nothing is lost.
	s, err = outbox.EnsureStream(ctx, js, outbox.StreamConfig{})
	require.NoError(t, err)
	info, err = s.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(1), info.State.Msgs)

	// Changed settings update the stream in place, but never weaken it:
	// a shorter max age and duplicate window leave the longer ones.
	s, err = outbox.EnsureStream(ctx, js, outbox.StreamConfig{MaxAge: time.Hour, DuplicateWindow: time.Minute, Description: "events"})
	require.NoError(t, err)
	info, err = s.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, outbox.DefaultMaxAge, info.Config.MaxAge)
	require.Equal(t, outbox.DefaultDuplicateWindow, info.Config.Duplicates)
	require.Equal(t, "events", info.Config.Description)
	require.Equal(t, uint64(1), info.State.Msgs)

	// Longer ones are applied.
	s, err = outbox.EnsureStream(ctx, js, outbox.StreamConfig{MaxAge: 30 * 24 * time.Hour, DuplicateWindow: 5 * time.Minute})
	require.NoError(t, err)
	info, err = s.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, 30*24*time.Hour, info.Config.MaxAge)
	require.Equal(t, 5*time.Minute, info.Config.Duplicates)
	require.Equal(t, "events", info.Config.Description, "a description eskit does not set stays")

	// Forever.
	s, err = outbox.EnsureStream(ctx, js, outbox.StreamConfig{MaxAge: -1})
	require.NoError(t, err)
	info, err = s.Info(ctx)
	require.NoError(t, err)
	require.Zero(t, info.Config.MaxAge)

	// And forever stays forever.
	s, err = outbox.EnsureStream(ctx, js, outbox.StreamConfig{})
	require.NoError(t, err)
	info, err = s.Info(ctx)
	require.NoError(t, err)
	require.Zero(t, info.Config.MaxAge)
	require.Equal(t, uint64(1), info.State.Msgs)
}

func TestStreamConfigValidate(t *testing.T) {
	t.Parallel()
	require.NoError(t, outbox.StreamConfig{}.Validate())
	require.Error(t, outbox.StreamConfig{Prefix: "a.b"}.Validate())
	require.Error(t, outbox.StreamConfig{Prefix: "a>"}.Validate())
	require.Error(t, outbox.StreamConfig{Name: "A.B"}.Validate())
	require.Error(t, outbox.StreamConfig{MaxAge: time.Minute, DuplicateWindow: time.Hour}.Validate())
}

// created is the configuration a server reports for a stream eskit created
// from cfg: JetStreamConfig with the server's own defaults filled in.
func created(cfg outbox.StreamConfig) jetstream.StreamConfig {
	sc := cfg.JetStreamConfig()
	sc.MaxMsgSize = -1
	sc.AllowDirect = true
	return sc
}

// conflicts returns the *StreamConflictError values err joins.
func conflicts(t *testing.T, err error) []*outbox.StreamConflictError {
	t.Helper()
	require.ErrorIs(t, err, outbox.ErrStreamConflict)
	var out []*outbox.StreamConflictError
	var walk func(error)
	walk = func(err error) {
		var ce *outbox.StreamConflictError
		if errors.As(err, &ce) && ce == err {
			out = append(out, ce)
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
		}
	}
	walk(err)
	return out
}

// TestReconcile checks the merge of an existing stream's configuration with
// eskit's, setting by setting, without a server.
func TestReconcile(t *testing.T) {
	t.Parallel()
	const day = 24 * time.Hour
	base := outbox.StreamConfig{Prefix: "bank"}
	for _, c := range []struct {
		name    string
		cfg     outbox.StreamConfig
		edit    func(*jetstream.StreamConfig) // the operator's changes
		changed bool
		want    func(*jetstream.StreamConfig) // expected changes over the existing config
	}{
		{name: "unchanged", cfg: base},
		{name: "operator raised replicas", cfg: base,
			edit: func(sc *jetstream.StreamConfig) { sc.Replicas = 3 }},
		{name: "eskit raises replicas", cfg: outbox.StreamConfig{Prefix: "bank", Replicas: 3}, changed: true,
			want: func(sc *jetstream.StreamConfig) { sc.Replicas = 3 }},
		{name: "operator raised max age", cfg: base,
			edit: func(sc *jetstream.StreamConfig) { sc.MaxAge = 30 * day }},
		{name: "operator keeps forever", cfg: base,
			edit: func(sc *jetstream.StreamConfig) { sc.MaxAge = 0 }},
		{name: "operator lowered max age", cfg: base, changed: true,
			edit: func(sc *jetstream.StreamConfig) { sc.MaxAge = time.Hour },
			want: func(sc *jetstream.StreamConfig) { sc.MaxAge = outbox.DefaultMaxAge }},
		{name: "eskit asks for forever", cfg: outbox.StreamConfig{Prefix: "bank", MaxAge: -1}, changed: true,
			edit: func(sc *jetstream.StreamConfig) { sc.MaxAge = 30 * day },
			want: func(sc *jetstream.StreamConfig) { sc.MaxAge = 0 }},
		{name: "operator's byte limit stays when eskit sets none", cfg: base,
			edit: func(sc *jetstream.StreamConfig) { sc.MaxBytes = 1 << 30 }},
		{name: "operator raised bytes", cfg: outbox.StreamConfig{Prefix: "bank", MaxBytes: 1 << 20},
			edit: func(sc *jetstream.StreamConfig) { sc.MaxBytes = 1 << 30 }},
		{name: "operator lifted bytes", cfg: outbox.StreamConfig{Prefix: "bank", MaxBytes: 1 << 20},
			edit: func(sc *jetstream.StreamConfig) { sc.MaxBytes = -1 }},
		{name: "eskit raises bytes", cfg: outbox.StreamConfig{Prefix: "bank", MaxBytes: 1 << 31}, changed: true,
			edit: func(sc *jetstream.StreamConfig) { sc.MaxBytes = 1 << 30 },
			want: func(sc *jetstream.StreamConfig) { sc.MaxBytes = 1 << 31 }},
		{name: "eskit lifts bytes", cfg: outbox.StreamConfig{Prefix: "bank", MaxBytes: -1}, changed: true,
			edit: func(sc *jetstream.StreamConfig) { sc.MaxBytes = 1 << 30 },
			want: func(sc *jetstream.StreamConfig) { sc.MaxBytes = -1 }},
		{name: "operator's other limits stay", cfg: base,
			edit: func(sc *jetstream.StreamConfig) {
				sc.MaxMsgs, sc.MaxMsgsPerSubject, sc.MaxConsumers, sc.MaxMsgSize = 1e6, 1000, 10, 1<<20
			}},
		{name: "operator raised duplicate window", cfg: base,
			edit: func(sc *jetstream.StreamConfig) { sc.Duplicates = 10 * time.Minute }},
		{name: "operator lowered duplicate window", cfg: base, changed: true,
			edit: func(sc *jetstream.StreamConfig) { sc.Duplicates = 30 * time.Second },
			want: func(sc *jetstream.StreamConfig) { sc.Duplicates = outbox.DefaultDuplicateWindow }},
		{name: "operator added subjects", cfg: base,
			edit: func(sc *jetstream.StreamConfig) { sc.Subjects = []string{"ops.>", "bank.>", "audit.*"} }},
		{name: "subject missing", cfg: base, changed: true,
			edit: func(sc *jetstream.StreamConfig) { sc.Subjects = []string{"legacy.>"} },
			want: func(sc *jetstream.StreamConfig) { sc.Subjects = []string{"legacy.>", "bank.>"} }},
		{name: "covered subjects give way", cfg: base, changed: true,
			edit: func(sc *jetstream.StreamConfig) { sc.Subjects = []string{"bank.account.>", "x.>", "bank.*.*.*.Opened"} },
			want: func(sc *jetstream.StreamConfig) { sc.Subjects = []string{"x.>", "bank.>"} }},
		{name: "a wider subject captures it", cfg: base,
			edit: func(sc *jetstream.StreamConfig) { sc.Subjects = []string{"*.>"} }},
		{name: "memory storage stays", cfg: base,
			edit: func(sc *jetstream.StreamConfig) { sc.Storage = jetstream.MemoryStorage }},
		{name: "memory storage asked for and had", cfg: outbox.StreamConfig{Prefix: "bank", Storage: jetstream.MemoryStorage},
			edit: func(sc *jetstream.StreamConfig) { sc.Storage = jetstream.MemoryStorage }},
		{name: "discard new without limits", cfg: base,
			edit: func(sc *jetstream.StreamConfig) { sc.Discard = jetstream.DiscardNew }},
		{name: "sealed", cfg: base,
			edit: func(sc *jetstream.StreamConfig) {
				sc.Sealed, sc.DenyDelete, sc.DenyPurge, sc.MaxAge, sc.Discard, sc.MaxBytes = true, true, true, 0, jetstream.DiscardNew, 1<<30
			}},
		{name: "operator's other settings stay", cfg: outbox.StreamConfig{Prefix: "bank", Replicas: 3}, changed: true,
			edit: func(sc *jetstream.StreamConfig) {
				sc.DenyDelete, sc.DenyPurge, sc.AllowRollup, sc.AllowDirect = true, true, true, false
				sc.Placement = &jetstream.Placement{Cluster: "east", Tags: []string{"ssd"}}
				sc.RePublish = &jetstream.RePublish{Source: "bank.>", Destination: "copy.>"}
				sc.SubjectTransform = &jetstream.SubjectTransformConfig{Source: "legacy.>", Destination: "old.>"}
				sc.Subjects = append(sc.Subjects, "legacy.>")
				sc.Metadata = map[string]string{"owner": "ops"}
				sc.Compression = jetstream.S2Compression
				sc.Description = "ops"
			},
			want: func(sc *jetstream.StreamConfig) { sc.Replicas = 3 }},
		{name: "eskit's description, compression, metadata and TTL", changed: true,
			cfg: outbox.StreamConfig{Prefix: "bank", Description: "events", Compression: jetstream.S2Compression,
				Metadata: map[string]string{"app": "bank"}, AllowMsgTTL: true},
			edit: func(sc *jetstream.StreamConfig) { sc.Metadata = map[string]string{"owner": "ops", "app": "old"} },
			want: func(sc *jetstream.StreamConfig) {
				sc.Description, sc.Compression, sc.AllowMsgTTL = "events", jetstream.S2Compression, true
				sc.Metadata = map[string]string{"owner": "ops", "app": "bank"}
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			existing := created(base)
			if c.edit != nil {
				c.edit(&existing)
			}
			before := existing
			before.Subjects = slices.Clone(existing.Subjects)
			before.Metadata = maps.Clone(existing.Metadata)
			got, changed, err := c.cfg.Reconcile(existing)
			require.NoError(t, err)
			require.Equal(t, c.changed, changed)
			want := before
			want.Subjects = slices.Clone(before.Subjects)
			want.Metadata = maps.Clone(before.Metadata)
			if c.want != nil {
				c.want(&want)
			}
			require.Equal(t, want, got)
			require.Equal(t, before, existing, "Reconcile must not modify its argument")
		})
	}
}

func TestReconcileConflicts(t *testing.T) {
	t.Parallel()
	base := outbox.StreamConfig{Prefix: "bank"}
	for _, c := range []struct {
		name    string
		cfg     outbox.StreamConfig
		edit    func(*jetstream.StreamConfig)
		setting string
		have    any
		want    any
	}{
		{"interest retention", base, func(sc *jetstream.StreamConfig) { sc.Retention = jetstream.InterestPolicy },
			"retention", jetstream.InterestPolicy, jetstream.LimitsPolicy},
		{"work queue", base, func(sc *jetstream.StreamConfig) { sc.Retention = jetstream.WorkQueuePolicy },
			"retention", jetstream.WorkQueuePolicy, jetstream.LimitsPolicy},
		{"storage", outbox.StreamConfig{Prefix: "bank", Storage: jetstream.MemoryStorage}, nil,
			"storage", jetstream.FileStorage, jetstream.MemoryStorage},
		{"discard new with max bytes", base, func(sc *jetstream.StreamConfig) { sc.Discard, sc.MaxBytes = jetstream.DiscardNew, 1<<30 },
			"discard", jetstream.DiscardNew, jetstream.DiscardOld},
		{"discard new with max messages", base, func(sc *jetstream.StreamConfig) { sc.Discard, sc.MaxMsgs = jetstream.DiscardNew, 1000 },
			"discard", jetstream.DiscardNew, jetstream.DiscardOld},
		{"discard new per subject", base, func(sc *jetstream.StreamConfig) {
			sc.Discard, sc.DiscardNewPerSubject, sc.MaxMsgsPerSubject = jetstream.DiscardNew, true, 10
		}, "discard", jetstream.DiscardNew, jetstream.DiscardOld},
		{"mirror", base, func(sc *jetstream.StreamConfig) {
			sc.Mirror, sc.Subjects = &jetstream.StreamSource{Name: "ORIGIN"}, nil
		},
			"mirror", "ORIGIN", "none"},
		{"no ack", base, func(sc *jetstream.StreamConfig) { sc.NoAck = true }, "no_ack", true, false},
		{"counter", base, func(sc *jetstream.StreamConfig) { sc.AllowMsgCounter = true }, "allow_msg_counter", true, false},
		{"transform", base, func(sc *jetstream.StreamConfig) {
			sc.SubjectTransform = &jetstream.SubjectTransformConfig{Source: "bank.*.>", Destination: "b.{{wildcard(1)}}.>"}
		}, "subject_transform", "bank.*.> -> b.{{wildcard(1)}}.>", "none"},
		{"partly overlapping subject", base, func(sc *jetstream.StreamConfig) { sc.Subjects = []string{"*.c5.>"} },
			"subjects", []string{"*.c5.>"}, "bank.>"},
	} {
		t.Run(c.name, func(t *testing.T) {
			existing := created(base)
			if c.edit != nil {
				c.edit(&existing)
			}
			_, changed, err := c.cfg.Reconcile(existing)
			require.False(t, changed)
			cs := conflicts(t, err)
			require.Len(t, cs, 1, "%v", err)
			require.Equal(t, "BANK", cs[0].Stream)
			require.Equal(t, c.setting, cs[0].Setting)
			require.Equal(t, c.have, cs[0].Existing)
			require.Equal(t, c.want, cs[0].Wanted)
			require.NotEmpty(t, cs[0].Reason)
			require.Contains(t, err.Error(), "stream BANK: "+c.setting)
		})
	}

	// Every conflict is reported at once.
	existing := created(base)
	existing.Retention, existing.NoAck, existing.Discard, existing.MaxMsgs = jetstream.InterestPolicy, true, jetstream.DiscardNew, 5
	_, _, err := outbox.StreamConfig{Prefix: "bank", Storage: jetstream.MemoryStorage}.Reconcile(existing)
	var settings []string
	for _, ce := range conflicts(t, err) {
		settings = append(settings, ce.Setting)
	}
	require.ElementsMatch(t, []string{"retention", "no_ack", "discard", "storage"}, settings)
	var ce *outbox.StreamConflictError
	require.ErrorAs(t, err, &ce)

	// The configuration of another stream is an error, not a merge.
	_, _, err = outbox.StreamConfig{Prefix: "other"}.Reconcile(existing)
	require.Error(t, err)
	require.NotErrorIs(t, err, outbox.ErrStreamConflict)
}

// writeCounter counts the stream writes that go through a JetStream
// context.
type writeCounter struct {
	jetstream.JetStream
	creates, updates atomic.Int32
}

func (w *writeCounter) CreateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	w.creates.Add(1)
	return w.JetStream.CreateStream(ctx, cfg)
}

func (w *writeCounter) UpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	w.updates.Add(1)
	return w.JetStream.UpdateStream(ctx, cfg)
}

func (w *writeCounter) CreateOrUpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	w.creates.Add(1)
	w.updates.Add(1)
	return w.JetStream.CreateOrUpdateStream(ctx, cfg)
}

// onServers runs f against an in-process server and, when ESKIT_NATS_URL
// is set, against that server, each time with a JetStream context and a
// stream name and prefix of its own (external streams are deleted after).
func onServers(t *testing.T, f func(t *testing.T, js jetstream.JetStream, prefix, stream string)) {
	t.Helper()
	run := func(t *testing.T, url string, external bool) {
		js := natstest.JetStream(t, url)
		prefix := strings.ReplaceAll(testsvc.Name("st"), "_", "")
		stream := strings.ToUpper(prefix)
		if external {
			t.Cleanup(func() { _ = js.DeleteStream(context.Background(), stream) })
		}
		f(t, js, prefix, stream)
	}
	t.Run("embedded", func(t *testing.T) {
		t.Parallel()
		run(t, natstest.Start(t).URL(), false)
	})
	t.Run("external", func(t *testing.T) {
		t.Parallel()
		url, ok := natstest.ExternalURL()
		if !ok {
			t.Skipf("%s is not set", natstest.EnvURL)
		}
		run(t, url, true)
	})
}

// updateAdvisories counts the server's stream-updated advisories for a
// stream: the server's own record that a stream's configuration was
// written.
func updateAdvisories(t *testing.T, js jetstream.JetStream, stream string) func() int {
	t.Helper()
	var n atomic.Int32
	sub, err := js.Conn().Subscribe("$JS.EVENT.ADVISORY.STREAM.UPDATED."+stream, func(*nats.Msg) { n.Add(1) })
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, js.Conn().Flush())
	return func() int {
		// A round trip to the server, then a moment for an advisory the
		// server sent just before to arrive.
		require.NoError(t, js.Conn().Flush())
		time.Sleep(200 * time.Millisecond)
		return int(n.Load())
	}
}

// TestEnsureStreamKeepsOperatorSettings: settings an operator raised on the
// stream survive EnsureStream, which then writes nothing.
func TestEnsureStreamKeepsOperatorSettings(t *testing.T) {
	t.Parallel()
	onServers(t, func(t *testing.T, js jetstream.JetStream, prefix, stream string) {
		ctx := context.Background()
		cfg := outbox.StreamConfig{Prefix: prefix, Name: stream, MaxBytes: 1 << 20}
		s, err := outbox.EnsureStream(ctx, js, cfg)
		require.NoError(t, err)
		info := s.CachedInfo()
		require.Equal(t, int64(1<<20), info.Config.MaxBytes)

		// The operator keeps more history, allows more bytes and adds a
		// subject.
		sc := info.Config
		sc.MaxAge = 30 * 24 * time.Hour
		sc.MaxBytes = 1 << 30
		sc.Subjects = append(sc.Subjects, "ops"+prefix+".>")
		sc.Duplicates = 10 * time.Minute
		// Listening before the operator's update, whose advisory is then
		// waited for: it cannot arrive late and pass for the relay's.
		advisories := updateAdvisories(t, js, stream)
		_, err = js.UpdateStream(ctx, sc)
		require.NoError(t, err)
		s, err = js.Stream(ctx, stream)
		require.NoError(t, err)
		operator := s.CachedInfo()
		require.Eventually(t, func() bool { return advisories() == 1 }, 10*time.Second, 10*time.Millisecond, "the operator's update advisory")

		counter := &writeCounter{JetStream: js}
		for range 2 { // a relay restart, twice
			s, err = outbox.EnsureStream(ctx, counter, cfg)
			require.NoError(t, err)
		}
		require.Zero(t, counter.creates.Load())
		require.Zero(t, counter.updates.Load(), "an unchanged restart writes nothing")
		require.Equal(t, 1, advisories(), "the server saw an update after the operator's")
		info, err = s.Info(ctx)
		require.NoError(t, err)
		require.Equal(t, operator.Config, info.Config)
		require.True(t, operator.Created.Equal(info.Created))
		require.Equal(t, 30*24*time.Hour, info.Config.MaxAge)
		require.Equal(t, int64(1<<30), info.Config.MaxBytes)
		require.Equal(t, 10*time.Minute, info.Config.Duplicates)
		require.Equal(t, []string{prefix + ".>", "ops" + prefix + ".>"}, info.Config.Subjects)

		// A change eskit asks for is written, once, and keeps the rest;
		// the advisory count shows the check above could see one.
		s, err = outbox.EnsureStream(ctx, counter, outbox.StreamConfig{Prefix: prefix, Name: stream, Description: "events"})
		require.NoError(t, err)
		require.Equal(t, int32(1), counter.updates.Load())
		require.Eventually(t, func() bool { return advisories() == 2 }, 10*time.Second, 10*time.Millisecond,
			"the advisory of eskit's update (after the operator's)")
		info, err = s.Info(ctx)
		require.NoError(t, err)
		require.Equal(t, "events", info.Config.Description)
		require.Equal(t, 30*24*time.Hour, info.Config.MaxAge)
		require.Equal(t, int64(1<<30), info.Config.MaxBytes)
		require.Equal(t, []string{prefix + ".>", "ops" + prefix + ".>"}, info.Config.Subjects)
		require.True(t, operator.Created.Equal(info.Created))
	})
}

// TestEnsureStreamRaisesWhatEskitNeeds: an operator's weaker settings are
// raised to eskit's, and a stream without eskit's subjects gets them.
func TestEnsureStreamRaisesWhatEskitNeeds(t *testing.T) {
	t.Parallel()
	onServers(t, func(t *testing.T, js jetstream.JetStream, prefix, stream string) {
		ctx := context.Background()
		// An operator made the stream by hand, for other subjects, with a
		// short history and duplicate window.
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{
			Name: stream, Subjects: []string{"legacy" + prefix + ".>"}, Storage: jetstream.FileStorage,
			MaxAge: time.Hour, Duplicates: 30 * time.Second,
		})
		require.NoError(t, err)
		_, err = js.Publish(ctx, "legacy"+prefix+".x", []byte("old"))
		require.NoError(t, err)

		counter := &writeCounter{JetStream: js}
		s, err := outbox.EnsureStream(ctx, counter, outbox.StreamConfig{Prefix: prefix, Name: stream})
		require.NoError(t, err)
		require.Equal(t, int32(1), counter.updates.Load())
		require.Zero(t, counter.creates.Load())
		info, err := s.Info(ctx)
		require.NoError(t, err)
		require.Equal(t, []string{"legacy" + prefix + ".>", prefix + ".>"}, info.Config.Subjects)
		require.Equal(t, outbox.DefaultMaxAge, info.Config.MaxAge)
		require.Equal(t, outbox.DefaultDuplicateWindow, info.Config.Duplicates)
		require.Equal(t, uint64(1), info.State.Msgs, "the operator's messages stay")

		// eskit's subjects now reach the stream.
		ack, err := js.Publish(ctx, natsevent.Subject(prefix, "account-1", "Opened"), []byte("{}"))
		require.NoError(t, err)
		require.Equal(t, stream, ack.Stream)
	})
}

// TestEnsureStreamConflicts: settings eskit cannot work with are reported
// with the stream and the setting, and the stream is left alone.
func TestEnsureStreamConflicts(t *testing.T) {
	t.Parallel()
	onServers(t, func(t *testing.T, js jetstream.JetStream, prefix, stream string) {
		ctx := context.Background()
		cases := []struct {
			setting string
			sc      jetstream.StreamConfig
			cfg     outbox.StreamConfig
		}{
			{"retention", jetstream.StreamConfig{Retention: jetstream.InterestPolicy}, outbox.StreamConfig{}},
			{"retention", jetstream.StreamConfig{Retention: jetstream.WorkQueuePolicy}, outbox.StreamConfig{}},
			{"discard", jetstream.StreamConfig{Discard: jetstream.DiscardNew, MaxBytes: 1 << 20}, outbox.StreamConfig{}},
			{"storage", jetstream.StreamConfig{Storage: jetstream.FileStorage}, outbox.StreamConfig{Storage: jetstream.MemoryStorage}},
			{"no_ack", jetstream.StreamConfig{NoAck: true}, outbox.StreamConfig{}},
		}
		for i, c := range cases {
			name := fmt.Sprintf("%s_%d", stream, i)
			p := fmt.Sprintf("%s%d", prefix, i)
			c.sc.Name, c.sc.Subjects = name, []string{p + ".>"}
			_, err := js.CreateStream(ctx, c.sc)
			require.NoError(t, err)
			t.Cleanup(func() { _ = js.DeleteStream(context.Background(), name) })
			s, err := js.Stream(ctx, name)
			require.NoError(t, err)
			before := s.CachedInfo().Config

			c.cfg.Prefix, c.cfg.Name = p, name
			counter := &writeCounter{JetStream: js}
			_, err = outbox.EnsureStream(ctx, counter, c.cfg)
			require.ErrorIs(t, err, outbox.ErrStreamConflict, c.setting)
			var ce *outbox.StreamConflictError
			require.ErrorAs(t, err, &ce)
			require.Equal(t, name, ce.Stream)
			require.Equal(t, c.setting, ce.Setting)
			require.Contains(t, err.Error(), name)
			require.Zero(t, counter.updates.Load()+counter.creates.Load(), "a conflicting stream is left alone")
			s, err = js.Stream(ctx, name)
			require.NoError(t, err)
			require.Equal(t, before, s.CachedInfo().Config)
		}
	})
}

// TestEnsureStreamCreateRace: relays that start together all succeed, and
// the stream is created once.
func TestEnsureStreamCreateRace(t *testing.T) {
	t.Parallel()
	onServers(t, func(t *testing.T, js jetstream.JetStream, prefix, stream string) {
		ctx := context.Background()
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			wg.Go(func() {
				// Different configurations, so a second create is refused
				// as "name in use" rather than accepted as identical.
				_, errs[i] = outbox.EnsureStream(ctx, js, outbox.StreamConfig{Prefix: prefix, Name: stream, DuplicateWindow: time.Duration(i+1) * time.Minute})
			})
		}
		wg.Wait()
		for _, err := range errs {
			require.NoError(t, err)
		}
		s, err := js.Stream(ctx, stream)
		require.NoError(t, err)
		require.Equal(t, []string{prefix + ".>"}, s.CachedInfo().Config.Subjects)
	})
}

// racingCreator is a JetStream context whose first stream lookup misses a
// stream another relay creates at that moment.
type racingCreator struct {
	jetstream.JetStream
	other   jetstream.StreamConfig
	lookups atomic.Int32
}

func (r *racingCreator) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	if r.lookups.Add(1) == 1 {
		if _, err := r.JetStream.CreateStream(ctx, r.other); err != nil {
			return nil, err
		}
		return nil, jetstream.ErrStreamNotFound
	}
	return r.JetStream.Stream(ctx, name)
}

// TestEnsureStreamLosesCreateRace: a stream created between EnsureStream's
// lookup and its create is merged with, not overwritten or failed on.
func TestEnsureStreamLosesCreateRace(t *testing.T) {
	t.Parallel()
	onServers(t, func(t *testing.T, js jetstream.JetStream, prefix, stream string) {
		ctx := context.Background()
		other := outbox.StreamConfig{Prefix: prefix, Name: stream, DuplicateWindow: 5 * time.Minute}.JetStreamConfig()
		other.Subjects = append(other.Subjects, "ops"+prefix+".>")
		racer := &racingCreator{JetStream: js, other: other}
		s, err := outbox.EnsureStream(ctx, racer, outbox.StreamConfig{Prefix: prefix, Name: stream, Description: "mine"})
		require.NoError(t, err)
		require.Equal(t, int32(2), racer.lookups.Load(), "looked up again after the lost create")
		info, err := s.Info(ctx)
		require.NoError(t, err)
		require.Equal(t, 5*time.Minute, info.Config.Duplicates, "the other relay's longer window stays")
		require.Equal(t, []string{prefix + ".>", "ops" + prefix + ".>"}, info.Config.Subjects)
		require.Equal(t, "mine", info.Config.Description)
	})
}
