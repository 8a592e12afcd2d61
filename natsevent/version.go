package natsevent

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrUnsupported reports a feature the connected NATS server is too old for.
// Older servers silently ignore stream settings and headers they do not know,
// so eskit checks the server's version itself instead of relying on the
// server to refuse them.
var ErrUnsupported = errors.New("natsevent: feature not supported by the NATS server")

// ServerVersion is a parsed NATS server version.
type ServerVersion struct {
	Major, Minor, Patch int
}

// String formats v as "major.minor.patch".
func (v ServerVersion) String() string {
	return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch)
}

// AtLeast reports whether v is w or newer.
func (v ServerVersion) AtLeast(w ServerVersion) bool {
	if v.Major != w.Major {
		return v.Major > w.Major
	}
	if v.Minor != w.Minor {
		return v.Minor > w.Minor
	}
	return v.Patch >= w.Patch
}

// ParseServerVersion parses a server version such as "2.9.10", "v2.11.0" or
// "2.12.0-RC.2" (a pre-release counts as its release).
func ParseServerVersion(s string) (ServerVersion, error) {
	t := strings.TrimPrefix(strings.TrimSpace(s), "v")
	if i := strings.IndexAny(t, "-+"); i >= 0 {
		t = t[:i]
	}
	parts := strings.Split(t, ".")
	if len(parts) != 3 {
		return ServerVersion{}, fmt.Errorf("natsevent: server version %q: want major.minor.patch", s)
	}
	var n [3]int
	for i, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil || v < 0 {
			return ServerVersion{}, fmt.Errorf("natsevent: server version %q: bad number %q", s, p)
		}
		n[i] = v
	}
	return ServerVersion{Major: n[0], Minor: n[1], Patch: n[2]}, nil
}

// Feature is a JetStream capability that needs a minimum server version.
type Feature int

// Features eskit knows the minimum server version of.
const (
	// FeatureJetStream is JetStream with message headers and de-duplication
	// by Nats-Msg-Id, which the relay always needs.
	FeatureJetStream Feature = iota
	// FeatureCompression is stream compression (StreamConfig.Compression).
	FeatureCompression
	// FeatureStreamMetadata is stream metadata (StreamConfig.Metadata).
	FeatureStreamMetadata
	// FeatureSubjectTransform is a stream subject transform.
	FeatureSubjectTransform
	// FeatureMsgTTL is per-message TTL (StreamConfig.AllowMsgTTL and the
	// Nats-TTL header the relay sets with WithMessageTTL).
	FeatureMsgTTL
	// FeatureAtomicBatch is atomic batch publishing (Nats-Batch-* headers).
	FeatureAtomicBatch
	// FeatureMultiFilter is a consumer with several filter subjects
	// (ConsumerConfig.FilterSubjects), as a partitioned consumer of
	// PartitionFilters needs. Older servers ignore FilterSubjects and
	// deliver the whole stream: a consumer there uses one filter and drops
	// the messages of other partitions itself.
	FeatureMultiFilter
)

// String describes the feature.
func (f Feature) String() string {
	switch f {
	case FeatureJetStream:
		return "JetStream with headers and Nats-Msg-Id de-duplication"
	case FeatureCompression:
		return "stream compression"
	case FeatureStreamMetadata:
		return "stream metadata"
	case FeatureSubjectTransform:
		return "stream subject transform"
	case FeatureMsgTTL:
		return "per-message TTL (Nats-TTL header, AllowMsgTTL)"
	case FeatureAtomicBatch:
		return "atomic batch publish (Nats-Batch-* headers)"
	case FeatureMultiFilter:
		return "consumers with several filter subjects (FilterSubjects)"
	}
	return fmt.Sprintf("feature(%d)", int(f))
}

// Since returns the first server version that supports f.
func (f Feature) Since() ServerVersion {
	switch f {
	case FeatureJetStream:
		return ServerVersion{2, 2, 0}
	case FeatureCompression, FeatureStreamMetadata, FeatureSubjectTransform, FeatureMultiFilter:
		return ServerVersion{2, 10, 0}
	case FeatureMsgTTL:
		return ServerVersion{2, 11, 0}
	case FeatureAtomicBatch:
		return ServerVersion{2, 12, 0}
	}
	// Unknown features are never assumed to be supported.
	return ServerVersion{Major: 1 << 30}
}

// UnsupportedError reports the features a server's version lacks. It
// matches ErrUnsupported.
type UnsupportedError struct {
	// Server is the server's version string.
	Server string
	// Missing lists the features the server is too old for.
	Missing []Feature
}

func (e *UnsupportedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "natsevent: NATS server %s does not support ", e.Server)
	for i, f := range e.Missing {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s (needs %s)", f, f.Since())
	}
	b.WriteString("; upgrade the server or turn the feature off")
	return b.String()
}

// Is makes errors.Is(err, ErrUnsupported) true.
func (e *UnsupportedError) Is(target error) bool { return target == ErrUnsupported }

// CheckServer checks that the server whose version string is given supports
// every feature. An unparsable version fails too: a check that cannot be
// made is not passed.
func CheckServer(version string, features ...Feature) error {
	v, err := ParseServerVersion(version)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	var missing []Feature
	for _, f := range features {
		if !v.AtLeast(f.Since()) {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return &UnsupportedError{Server: version, Missing: missing}
	}
	return nil
}

// CheckJetStream checks that the server js is connected to supports every
// feature, waiting (until ctx ends) while the connection is reconnecting.
// It fails with an error matching ErrUnsupported when the server is too old
// or reports a version that cannot be parsed, and with another error when
// the connection is closed or ctx ends first:
//
//	err := natsevent.CheckJetStream(ctx, js, natsevent.FeatureMultiFilter)
//	switch {
//	case errors.Is(err, natsevent.ErrUnsupported):
//		// one filter subject; drop other partitions' messages client-side
//	case err != nil:
//		return err
//	}
func CheckJetStream(ctx context.Context, js jetstream.JetStream, features ...Feature) error {
	version, err := ConnectedVersion(ctx, js)
	if err != nil {
		return err
	}
	return CheckServer(version, features...)
}

// ConnectedVersion returns the version of the server js is connected to,
// waiting (until ctx ends) while the connection is reconnecting.
func ConnectedVersion(ctx context.Context, js jetstream.JetStream) (string, error) {
	nc := js.Conn()
	if nc == nil {
		return "", errors.New("natsevent: JetStream context has no NATS connection")
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if v := nc.ConnectedServerVersion(); v != "" {
			return v, nil
		}
		if nc.IsClosed() {
			return "", errors.New("natsevent: NATS connection is closed")
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("natsevent: waiting for the NATS connection: %w", ctx.Err())
		case <-t.C:
		}
	}
}
