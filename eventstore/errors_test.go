package eventstore_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/eskit/eskit/eventstore"
)

func TestTypedErrorsMatchSentinels(t *testing.T) {
	id := eventstore.NewEventID()
	cause := errors.New("cause")
	for _, tc := range []struct {
		err      error
		sentinel error
		mentions []string
	}{
		{&eventstore.ConcurrencyError{Stream: "s1", Expected: eventstore.Exact(3), Actual: 5}, eventstore.ErrConcurrency, []string{`"s1"`, "expected version 3", "actual 5"}},
		{&eventstore.ConcurrencyError{Stream: "s1", Reason: "older transaction"}, eventstore.ErrConcurrency, []string{`"s1"`, "older transaction"}},
		{&eventstore.StreamNotFoundError{Stream: "s2"}, eventstore.ErrStreamNotFound, []string{`"s2"`}},
		{&eventstore.InvalidArgumentError{Field: "stream ID", Reason: "empty"}, eventstore.ErrInvalidArgument, []string{"stream ID", "empty"}},
		{&eventstore.DuplicateEventError{EventID: id, Stream: "s3"}, eventstore.ErrDuplicateEvent, []string{id.String(), `"s3"`}},
		{&eventstore.DuplicateEventError{EventID: id}, eventstore.ErrDuplicateEvent, []string{id.String()}},
		{&eventstore.UnknownEventTypeError{Type: "T", Stream: "s4", Version: 2}, eventstore.ErrUnknownEventType, []string{`"T"`, `"s4"`, "version 2"}},
		{&eventstore.DecodeError{Type: "T", Stream: "s5", Version: 3, Err: cause}, eventstore.ErrDecode, []string{`"T"`, `"s5"`, "version 3", "cause"}},
	} {
		wrapped := fmt.Errorf("context: %w", tc.err)
		if !errors.Is(wrapped, tc.sentinel) {
			t.Errorf("%T does not match %v", tc.err, tc.sentinel)
		}
		for _, other := range []error{eventstore.ErrConcurrency, eventstore.ErrStreamNotFound, eventstore.ErrInvalidArgument, eventstore.ErrDuplicateEvent, eventstore.ErrUnknownEventType, eventstore.ErrDecode, eventstore.ErrClosed} {
			if other != tc.sentinel && errors.Is(wrapped, other) {
				t.Errorf("%T also matches %v", tc.err, other)
			}
		}
		for _, m := range tc.mentions {
			if !strings.Contains(tc.err.Error(), m) {
				t.Errorf("%q does not mention %s", tc.err.Error(), m)
			}
		}
		if got := eventstore.IsRetryable(wrapped); got != (tc.sentinel == eventstore.ErrConcurrency) {
			t.Errorf("IsRetryable(%T) = %v", tc.err, got)
		}
	}
	if !errors.Is(&eventstore.DecodeError{Err: cause}, cause) {
		t.Error("DecodeError does not unwrap to its cause")
	}
}

func TestMetadata(t *testing.T) {
	var nilMD eventstore.Metadata
	if nilMD.Get("k") != "" || nilMD.Clone() != nil {
		t.Fatal("nil Metadata misbehaves")
	}
	md := eventstore.Metadata{"k": "v"}
	c := md.Clone()
	c["k"] = "changed"
	if md.Get("k") != "v" {
		t.Fatal("Clone shares the map")
	}
}

func TestAppendResultVersion(t *testing.T) {
	if v := (eventstore.AppendResult{}).Version(); v != 0 {
		t.Fatalf("Version of an empty result = %d", v)
	}
	r := eventstore.AppendResult{Streams: []eventstore.StreamResult{{StreamID: "a", Version: 4}, {StreamID: "b", Version: 9}}}
	if r.Version() != 4 {
		t.Fatalf("Version = %d, want the first stream's", r.Version())
	}
}

func TestNewEventID(t *testing.T) {
	a, b := eventstore.NewEventID(), eventstore.NewEventID()
	if a == b || a.Version() != 7 || b.Version() != 7 {
		t.Fatalf("NewEventID gave %s and %s", a, b)
	}
}
