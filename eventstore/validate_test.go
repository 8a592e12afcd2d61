package eventstore_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/eskit/eskit/eventstore"
)

func ev(typ, data string) eventstore.Event {
	return eventstore.Event{Type: typ, Data: []byte(data)}
}

func TestPrepareAppendsAssignsIDs(t *testing.T) {
	fixed := eventstore.NewEventID()
	in := []eventstore.StreamAppend{
		{StreamID: "a", Expected: eventstore.Any, Events: []eventstore.Event{ev("T", "1"), {ID: fixed, Type: "T", Data: []byte("2")}}},
		{StreamID: "b", Expected: eventstore.Exact(3), Events: []eventstore.Event{ev("T", "3")}},
	}
	out, err := eventstore.Limits{}.PrepareAppends(in)
	if err != nil {
		t.Fatalf("PrepareAppends: %v", err)
	}
	if len(out) != 2 || out[0].StreamID != "a" || out[1].StreamID != "b" || out[1].Expected != eventstore.Exact(3) {
		t.Fatalf("PrepareAppends changed the appends: %+v", out)
	}
	ids := map[uuid.UUID]bool{}
	for _, a := range out {
		for _, e := range a.Events {
			if e.ID == uuid.Nil || ids[e.ID] {
				t.Fatalf("event ID %s: want fresh distinct IDs", e.ID)
			}
			ids[e.ID] = true
		}
	}
	if out[0].Events[1].ID != fixed {
		t.Fatalf("a caller's ID was replaced")
	}
	if out[0].Events[0].ID.Version() != 7 {
		t.Fatalf("assigned ID %s is not a v7 UUID", out[0].Events[0].ID)
	}
	if in[0].Events[0].ID != uuid.Nil {
		t.Fatal("PrepareAppends changed the caller's events")
	}
}

func TestPrepareAppendsRejects(t *testing.T) {
	limits := eventstore.Limits{MaxStreamIDLength: 8, MaxEventTypeLength: 4, MaxEventSize: 10, MaxAppendEvents: 3}
	dup := eventstore.NewEventID()
	one := func(stream string, evs ...eventstore.Event) []eventstore.StreamAppend {
		return []eventstore.StreamAppend{{StreamID: stream, Expected: eventstore.Any, Events: evs}}
	}
	for name, tc := range map[string]struct {
		appends []eventstore.StreamAppend
		field   string
	}{
		"nothing":            {nil, "appends"},
		"no events":          {one("s"), "events"},
		"empty stream":       {one("", ev("T", "1")), "stream ID"},
		"long stream":        {one("123456789", ev("T", "1")), "stream ID"},
		"control in stream":  {one("a\x1fb", ev("T", "1")), "stream ID"},
		"bad UTF-8 stream":   {one("\xc3", ev("T", "1")), "stream ID"},
		"empty type":         {one("s", ev("", "1")), "events[0].Type"},
		"long type":          {one("s", ev("TTTTT", "1")), "events[0].Type"},
		"control in type":    {one("s", ev("T\t", "1")), "events[0].Type"},
		"bad UTF-8 type":     {one("s", ev("\xff", "1")), "events[0].Type"},
		"empty data":         {one("s", ev("T", "1"), ev("T", "")), "events[1].Data"},
		"oversized":          {one("s", ev("T", "12345678901")), "events[0].Data"},
		"oversized metadata": {one("s", eventstore.Event{Type: "T", Data: []byte("1"), Metadata: eventstore.Metadata{"key": "1234567"}}), "events[0].Data"},
		"NUL metadata":       {one("s", eventstore.Event{Type: "T", Data: []byte("1"), Metadata: eventstore.Metadata{"k": "\x00"}}), "events[0].Metadata"},
		"bad UTF-8 metadata": {one("s", eventstore.Event{Type: "T", Data: []byte("1"), Metadata: eventstore.Metadata{"\xff": "v"}}), "events[0].Metadata"},
		"too many events":    {one("s", ev("T", "1"), ev("T", "2"), ev("T", "3"), ev("T", "4")), "events"},
		"too many in multi": {[]eventstore.StreamAppend{
			{StreamID: "a", Expected: eventstore.Any, Events: []eventstore.Event{ev("T", "1"), ev("T", "2")}},
			{StreamID: "b", Expected: eventstore.Any, Events: []eventstore.Event{ev("T", "1"), ev("T", "2")}},
		}, "events"},
		"invalid expected": {[]eventstore.StreamAppend{{StreamID: "s", Expected: -3, Events: []eventstore.Event{ev("T", "1")}}}, "expected version"},
		"stream twice": {[]eventstore.StreamAppend{
			{StreamID: "s", Expected: eventstore.Any, Events: []eventstore.Event{ev("T", "1")}},
			{StreamID: "s", Expected: eventstore.Any, Events: []eventstore.Event{ev("T", "1")}},
		}, "stream ID"},
		"duplicate ID": {one("s", eventstore.Event{ID: dup, Type: "T", Data: []byte("1")}, eventstore.Event{ID: dup, Type: "T", Data: []byte("2")}), "events[1].ID"},
		"duplicate ID across streams": {[]eventstore.StreamAppend{
			{StreamID: "a", Expected: eventstore.Any, Events: []eventstore.Event{{ID: dup, Type: "T", Data: []byte("1")}}},
			{StreamID: "b", Expected: eventstore.Any, Events: []eventstore.Event{{ID: dup, Type: "T", Data: []byte("1")}}},
		}, "events[0].ID"},
	} {
		out, err := limits.PrepareAppends(tc.appends)
		if !errors.Is(err, eventstore.ErrInvalidArgument) || out != nil {
			t.Errorf("%s: got %v, %v; want ErrInvalidArgument", name, out, err)
			continue
		}
		var ia *eventstore.InvalidArgumentError
		if !errors.As(err, &ia) || ia.Field != tc.field || ia.Reason == "" {
			t.Errorf("%s: error %v; want an *InvalidArgumentError for field %q", name, err, tc.field)
		}
	}
}

func TestLimitsDefaults(t *testing.T) {
	var l eventstore.Limits
	if err := l.ValidateStreamID(strings.Repeat("s", eventstore.DefaultMaxStreamIDLength)); err != nil {
		t.Errorf("stream ID at the default limit: %v", err)
	}
	if err := l.ValidateStreamID(strings.Repeat("s", eventstore.DefaultMaxStreamIDLength+1)); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Errorf("stream ID over the default limit: %v", err)
	}
	for _, id := range []string{"order.1", "a*b", "x>y", "with space", "ünï 流", "%_"} {
		if err := l.ValidateStreamID(id); err != nil {
			t.Errorf("ValidateStreamID(%q): %v", id, err)
		}
	}
	big := eventstore.Event{Type: strings.Repeat("T", eventstore.DefaultMaxEventTypeLength), Data: make([]byte, eventstore.DefaultMaxEventSize)}
	if _, err := l.PrepareAppends([]eventstore.StreamAppend{{StreamID: "s", Events: []eventstore.Event{big}}}); err != nil {
		t.Errorf("event at the default limits: %v", err)
	}
	big.Data = append(big.Data, 0)
	if _, err := l.PrepareAppends([]eventstore.StreamAppend{{StreamID: "s", Events: []eventstore.Event{big}}}); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Errorf("event over the default size: %v", err)
	}
}
