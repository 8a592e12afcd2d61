package eventstore_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/eskit/eskit/eventstore"
)

type accountEvent interface{ isAccountEvent() }

type opened struct {
	Owner string `json:"owner"`
}

type deposited struct {
	Amount int64  `json:"amount"`
	Memo   string `json:"memo,omitempty"`
}

func (opened) isAccountEvent()     {}
func (*deposited) isAccountEvent() {}

func record(stream string, version int64, e eventstore.Event) eventstore.Record {
	return eventstore.Record{Event: e, StreamID: stream, Version: version}
}

func TestRegistryRoundTrip(t *testing.T) {
	r := eventstore.NewRegistry()
	if err := eventstore.Register[opened](r, "Opened"); err != nil {
		t.Fatal(err)
	}
	if err := eventstore.Register[*deposited](r, "Deposited"); err != nil {
		t.Fatal(err)
	}
	if got := r.Types(); !slices.Equal(got, []string{"Deposited", "Opened"}) {
		t.Fatalf("Types() = %v", got)
	}
	if _, ok := r.Codec().(eventstore.JSONCodec); !ok {
		t.Fatalf("default codec is %T", r.Codec())
	}

	md := eventstore.Metadata{eventstore.MetaCorrelationID: "c1"}
	e, err := r.Encode(opened{Owner: "ann"}, md)
	if err != nil {
		t.Fatal(err)
	}
	if e.Type != "Opened" || string(e.Data) != `{"owner":"ann"}` || e.Metadata.Get(eventstore.MetaCorrelationID) != "c1" {
		t.Fatalf("Encode = %+v", e)
	}
	if len(e.Metadata) != 1 {
		t.Fatalf("version-1 JSON events need no extra metadata, got %v", e.Metadata)
	}
	v, err := r.Decode(record("acc-1", 1, e))
	if err != nil || v != (opened{Owner: "ann"}) {
		t.Fatalf("Decode = %#v, %v", v, err)
	}

	e, err = r.Encode(&deposited{Amount: 5, Memo: "x"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if e.Metadata != nil {
		t.Fatalf("nil metadata became %v", e.Metadata)
	}
	v, err = r.Decode(record("acc-1", 2, e))
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := v.(*deposited); !ok || *d != (deposited{Amount: 5, Memo: "x"}) {
		t.Fatalf("Decode = %#v, want *deposited", v)
	}
	if name, err := r.Name(&deposited{}); err != nil || name != "Deposited" {
		t.Fatalf("Name = %q, %v", name, err)
	}

	ae, err := eventstore.DecodeAs[accountEvent](r, record("acc-1", 2, e))
	if err != nil {
		t.Fatalf("DecodeAs: %v", err)
	}
	if _, ok := ae.(*deposited); !ok {
		t.Fatalf("DecodeAs = %T", ae)
	}
	_, err = eventstore.DecodeAs[fmt.Stringer](r, record("acc-1", 2, e))
	var de *eventstore.DecodeError
	if !errors.As(err, &de) || de.Stream != "acc-1" || de.Version != 2 || de.Type != "Deposited" {
		t.Fatalf("DecodeAs to the wrong interface: %v", err)
	}
}

func TestRegistryEncodeErrors(t *testing.T) {
	r := eventstore.NewRegistry()
	if err := eventstore.Register[opened](r, "Opened"); err != nil {
		t.Fatal(err)
	}
	// Registered as a value, so a pointer is a different type.
	if _, err := r.Encode(&opened{}, nil); !errors.Is(err, eventstore.ErrUnknownEventType) {
		t.Fatalf("Encode of an unregistered type: %v", err)
	}
	if _, err := r.Encode(nil, nil); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Fatalf("Encode(nil): %v", err)
	}
	if _, err := r.Name(deposited{}); !errors.Is(err, eventstore.ErrUnknownEventType) {
		t.Fatalf("Name of an unregistered type: %v", err)
	}
	type unencodable struct{ C chan int }
	if err := eventstore.Register[unencodable](r, "Bad"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Encode(unencodable{}, nil); err == nil {
		t.Fatal("Encode of a value the codec rejects succeeded")
	}
}

func TestRegisterRejects(t *testing.T) {
	r := eventstore.NewRegistry()
	if err := eventstore.Register[opened](r, "Opened"); err != nil {
		t.Fatal(err)
	}
	noop := func(b []byte) ([]byte, error) { return b, nil }
	for name, err := range map[string]error{
		"name twice":             eventstore.Register[deposited](r, "Opened"),
		"type twice":             eventstore.Register[opened](r, "Opened2"),
		"empty name":             eventstore.Register[deposited](r, ""),
		"interface":              eventstore.Register[accountEvent](r, "Account"),
		"schema version 0":       eventstore.Register[deposited](r, "D", eventstore.SchemaVersion(0)),
		"missing upcaster":       eventstore.Register[deposited](r, "D", eventstore.SchemaVersion(3), eventstore.Upcast(1, noop)),
		"upcaster twice":         eventstore.Register[deposited](r, "D", eventstore.SchemaVersion(2), eventstore.Upcast(1, noop), eventstore.Upcast(1, noop)),
		"upcaster from 0":        eventstore.Register[deposited](r, "D", eventstore.Upcast(0, noop)),
		"nil upcaster":           eventstore.Register[deposited](r, "D", eventstore.SchemaVersion(2), eventstore.Upcast(1, nil)),
		"name twice, other type": eventstore.Register[*opened](r, "Opened"),
	} {
		if !errors.Is(err, eventstore.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
		}
	}
	if got := r.Types(); !slices.Equal(got, []string{"Opened"}) {
		t.Fatalf("failed registrations left types behind: %v", got)
	}
	// A pointer type is distinct from its value type.
	if err := eventstore.Register[*opened](r, "OpenedPtr"); err != nil {
		t.Fatalf("Register of the pointer type: %v", err)
	}
}

func TestRegistryDecodeErrors(t *testing.T) {
	r := eventstore.NewRegistry()
	if err := eventstore.Register[deposited](r, "Deposited"); err != nil {
		t.Fatal(err)
	}
	_, err := r.Decode(record("acc-7", 3, eventstore.Event{Type: "Renamed", Data: []byte("{}")}))
	var ue *eventstore.UnknownEventTypeError
	if !errors.Is(err, eventstore.ErrUnknownEventType) || !errors.As(err, &ue) {
		t.Fatalf("Decode of an unknown type: %v", err)
	}
	if ue.Type != "Renamed" || ue.Stream != "acc-7" || ue.Version != 3 || !strings.Contains(err.Error(), "acc-7") {
		t.Fatalf("UnknownEventTypeError = %+v", ue)
	}

	for name, e := range map[string]eventstore.Event{
		"not JSON":           {Type: "Deposited", Data: []byte("{nope")},
		"wrong shape":        {Type: "Deposited", Data: []byte(`{"amount":"ten"}`)},
		"newer schema":       {Type: "Deposited", Data: []byte(`{}`), Metadata: eventstore.Metadata{eventstore.MetaSchemaVersion: "2"}},
		"bad schema version": {Type: "Deposited", Data: []byte(`{}`), Metadata: eventstore.Metadata{eventstore.MetaSchemaVersion: "two"}},
		"schema version 0":   {Type: "Deposited", Data: []byte(`{}`), Metadata: eventstore.Metadata{eventstore.MetaSchemaVersion: "0"}},
	} {
		_, err := r.Decode(record("acc-7", 4, e))
		var de *eventstore.DecodeError
		if !errors.Is(err, eventstore.ErrDecode) || !errors.As(err, &de) {
			t.Errorf("%s: %v, want a *DecodeError", name, err)
			continue
		}
		if de.Stream != "acc-7" || de.Version != 4 || de.Type != "Deposited" || de.Err == nil {
			t.Errorf("%s: DecodeError = %+v", name, de)
		}
		if !strings.Contains(err.Error(), `"acc-7"`) {
			t.Errorf("%s: message %q does not name the stream", name, err)
		}
	}
	_, err = r.Decode(record("acc-7", 4, eventstore.Event{Type: "Deposited", Data: []byte("{nope")}))
	var syntax *json.SyntaxError
	if !errors.As(err, &syntax) {
		t.Fatalf("DecodeError does not unwrap to the codec's error: %v", err)
	}
}

// depositedV3 is the third schema of Deposited: v1 had "amt" in whole
// units, v2 renamed it "amount", v3 counts cents.
type depositedV3 struct {
	Cents int64 `json:"cents"`
}

func TestRegistryUpcasters(t *testing.T) {
	var calls []int
	v1to2 := func(b []byte) ([]byte, error) {
		calls = append(calls, 1)
		var in struct {
			Amt int64 `json:"amt"`
		}
		if err := json.Unmarshal(b, &in); err != nil {
			return nil, err
		}
		return json.Marshal(map[string]int64{"amount": in.Amt})
	}
	v2to3 := func(b []byte) ([]byte, error) {
		calls = append(calls, 2)
		var in struct {
			Amount int64 `json:"amount"`
		}
		if err := json.Unmarshal(b, &in); err != nil {
			return nil, err
		}
		return json.Marshal(map[string]int64{"cents": in.Amount * 100})
	}
	r := eventstore.NewRegistry()
	if err := eventstore.Register[depositedV3](r, "Deposited", eventstore.SchemaVersion(3), eventstore.Upcast(2, v2to3), eventstore.Upcast(1, v1to2)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		event eventstore.Event
		calls []int
	}{
		{"v1 without metadata", eventstore.Event{Type: "Deposited", Data: []byte(`{"amt":7}`)}, []int{1, 2}},
		{"v1 explicit", eventstore.Event{Type: "Deposited", Data: []byte(`{"amt":7}`), Metadata: eventstore.Metadata{eventstore.MetaSchemaVersion: "1"}}, []int{1, 2}},
		{"v2", eventstore.Event{Type: "Deposited", Data: []byte(`{"amount":7}`), Metadata: eventstore.Metadata{eventstore.MetaSchemaVersion: "2"}}, []int{2}},
		{"v3", eventstore.Event{Type: "Deposited", Data: []byte(`{"cents":700}`), Metadata: eventstore.Metadata{eventstore.MetaSchemaVersion: "3"}}, nil},
	} {
		calls = nil
		v, err := r.Decode(record("acc", 1, tc.event))
		if err != nil || v != (depositedV3{Cents: 700}) {
			t.Errorf("%s: Decode = %#v, %v", tc.name, v, err)
		}
		if !slices.Equal(calls, tc.calls) {
			t.Errorf("%s: upcasters ran %v, want %v", tc.name, calls, tc.calls)
		}
	}

	e, err := r.Encode(depositedV3{Cents: 1}, eventstore.Metadata{"k": "v"})
	if err != nil {
		t.Fatal(err)
	}
	if e.Metadata.Get(eventstore.MetaSchemaVersion) != "3" || e.Metadata.Get("k") != "v" {
		t.Fatalf("Encode metadata = %v, want schema version 3 and the caller's keys", e.Metadata)
	}

	_, err = r.Decode(record("acc", 9, eventstore.Event{Type: "Deposited", Data: []byte(`"not an object"`)}))
	var de *eventstore.DecodeError
	if !errors.As(err, &de) || de.Version != 9 || !strings.Contains(err.Error(), "upcast from version 1") {
		t.Fatalf("failing upcaster: %v", err)
	}
	_, err = r.Decode(record("acc", 9, eventstore.Event{Type: "Deposited", Data: []byte(`{}`), Metadata: eventstore.Metadata{eventstore.MetaSchemaVersion: "4"}}))
	if !errors.Is(err, eventstore.ErrDecode) || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("payload newer than the code: %v", err)
	}
}

func TestEncodeDoesNotChangeCallerMetadata(t *testing.T) {
	r := eventstore.NewRegistry()
	if err := eventstore.Register[depositedV3](r, "D", eventstore.SchemaVersion(2), eventstore.Upcast(1, func(b []byte) ([]byte, error) { return b, nil })); err != nil {
		t.Fatal(err)
	}
	md := eventstore.Metadata{"k": "v"}
	if _, err := r.Encode(depositedV3{}, md); err != nil {
		t.Fatal(err)
	}
	if len(md) != 1 {
		t.Fatalf("Encode changed the caller's metadata: %v", md)
	}
}

// lineCodec encodes deposited values as "amount|memo".
type lineCodec struct{}

func (lineCodec) ContentType() string { return "text/x-line" }

func (lineCodec) Marshal(v any) ([]byte, error) {
	d, ok := v.(deposited)
	if !ok {
		return nil, fmt.Errorf("lineCodec: cannot encode %T", v)
	}
	return fmt.Appendf(nil, "%d|%s", d.Amount, d.Memo), nil
}

func (lineCodec) Unmarshal(data []byte, v any) error {
	d, ok := v.(*deposited)
	if !ok {
		return fmt.Errorf("lineCodec: cannot decode into %T", v)
	}
	amount, memo, found := bytes.Cut(data, []byte("|"))
	if !found {
		return errors.New("lineCodec: missing separator")
	}
	if _, err := fmt.Sscan(string(amount), &d.Amount); err != nil {
		return err
	}
	d.Memo = string(memo)
	return nil
}

func TestRegistryCustomCodec(t *testing.T) {
	r := eventstore.NewRegistry(eventstore.WithCodec(lineCodec{}))
	if err := eventstore.Register[deposited](r, "Deposited"); err != nil {
		t.Fatal(err)
	}
	e, err := r.Encode(deposited{Amount: 12, Memo: "rent"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(e.Data) != "12|rent" || e.Metadata.Get(eventstore.MetaContentType) != "text/x-line" {
		t.Fatalf("Encode = %q, metadata %v", e.Data, e.Metadata)
	}
	v, err := r.Decode(record("acc", 1, e))
	if err != nil || v != (deposited{Amount: 12, Memo: "rent"}) {
		t.Fatalf("Decode = %#v, %v", v, err)
	}
	_, err = r.Decode(record("acc", 2, eventstore.Event{Type: "Deposited", Data: []byte("garbage")}))
	if !errors.Is(err, eventstore.ErrDecode) {
		t.Fatalf("Decode of a bad payload: %v", err)
	}
}

func TestRegistryConcurrentUse(t *testing.T) {
	r := eventstore.NewRegistry()
	if err := eventstore.Register[opened](r, "Opened"); err != nil {
		t.Fatal(err)
	}
	e, err := r.Encode(opened{Owner: "x"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 8 {
		wg.Go(func() {
			for range 100 {
				if _, err := r.Decode(record("s", 1, e)); err != nil {
					errs <- err
					return
				}
			}
		})
		wg.Go(func() {
			if err := eventstore.Register[deposited](r, fmt.Sprintf("Deposited%d", i)); err != nil && !errors.Is(err, eventstore.ErrInvalidArgument) {
				errs <- err
			}
			r.Types()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Exactly one of the concurrent registrations of the same Go type won.
	if n := len(r.Types()); n != 2 {
		t.Fatalf("%d types registered, want 2", n)
	}
}

// A type name every append would refuse cannot be registered.
func TestRegisterValidatesTypeNames(t *testing.T) {
	type E struct{}
	for _, name := range []string{"", "a\x00b", "line\nbreak", "\xff\xfe", strings.Repeat("x", 300), "tab\t"} {
		reg := eventstore.NewRegistry()
		if err := eventstore.Register[E](reg, name); !errors.Is(err, eventstore.ErrInvalidArgument) {
			t.Errorf("Register(%q) = %v, want ErrInvalidArgument", name, err)
		}
	}
	if err := eventstore.Register[E](eventstore.NewRegistry(), "bank.Deposited v2 ✓"); err != nil {
		t.Errorf("Register: %v", err)
	}
}
