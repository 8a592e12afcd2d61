package eventstore_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/eskit/eskit/eventstore"
)

type fuzzName string

type fuzzInner struct {
	X int8
	Y float32 `json:"y"`
	S string  `json:"s,omitempty"`
}

type fuzzEvent struct {
	Amount   int64     `json:"amount"`
	Currency string    `json:"currency,omitempty"`
	Note     string    // matched by its Go name
	OK       bool      `json:"ok"`
	U        uint16    `json:"u"`
	F        float64   `json:"f"`
	In       fuzzInner `json:"in"`
	Named    fuzzName  `json:"named"`
	Skipped  string    `json:"-"`
	hidden   int       // encoding/json ignores it, and so must the fast path
}

var _ = fuzzEvent{}.hidden

// A type the fast path does not take: it must decode as before.
type fuzzOther struct {
	At   time.Time         `json:"at"`
	Tags []string          `json:"tags"`
	N    json.Number       `json:"n"`
	M    map[string]string `json:"m"`
	S    int               `json:"s,string"`
}

var jsonSeeds = []string{
	`{"amount":123,"currency":"EUR","Note":"benchmark"}`,
	`{"amount":-0,"ok":true,"u":65535,"f":-1.5e-3,"in":{"X":-128,"y":3.25,"s":"é"},"named":"n"}`,
	` {"AMOUNT":1 , "note":"x","NOTE":"y"} `,
	`{"amount":1,"amount":2,"in":{"X":1},"in":{"y":2}}`,
	`null`, `{}`, ` null `, `{"amount":null,"in":null,"ok":null}`,
	`{"amount":1.0}`, `{"amount":1e2}`, `{"amount":01}`, `{"amount":9223372036854775808}`,
	`{"in":{"X":128}}`, `{"u":-1}`, `{"u":65536}`, `{"f":1e400}`, `{"in":{"y":1e39}}`,
	`{"amount":"1"}`, `{"ok":1}`, `{"Note":1}`, `{"in":[]}`,
	`{"currency":"E\u0055R"}`, `{"currency":"tab\there"}`, `{"currency":"\ud83d\ude00"}`,
	`{"ſ":"x","K":"y"}`, `{"note":"x","unknown":{"a":[1,2,{"b":"\u00e9\n"}],"c":null},"z":[true,false]}`,
	`{"amount":1}x`, `{"amount":1,}`, `{"amount":1`, `{"amount" 1}`, `{amount:1}`, `[1]`, `"x"`, ``,
	"{\"currency\":\"\xff\"}", "\xef\xbb\xbf{}", "{\"currency\":\"a\x01\"}", `{"Skipped":"no","hidden":1}`,
	`{"unknown":"\x"}`, `{"unknown":"\u12"}`, `{"unknown":-}`, `{"unknown":1.}`, `{"unknown":.5}`, `{"unknown":tru}`,
	`{"at":"2026-01-02T03:04:05Z","tags":["a"],"n":12,"m":{"k":"v"},"s":"7"}`,
}

// Decoding through the registry gives what encoding/json gives, for
// payloads the fast path takes and for those it leaves to encoding/json.
func FuzzDecodeMatchesEncodingJSON(f *testing.F) {
	for _, s := range jsonSeeds {
		f.Add([]byte(s))
	}
	reg := eventstore.NewRegistry()
	if err := eventstore.Register[fuzzEvent](reg, "Event"); err != nil {
		f.Fatal(err)
	}
	if err := eventstore.Register[fuzzOther](reg, "Other"); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecode[fuzzEvent](t, reg, "Event", data)
		checkDecode[fuzzOther](t, reg, "Other", data)
	})
}

func checkDecode[T any](t *testing.T, reg *eventstore.Registry, typ string, data []byte) {
	t.Helper()
	var want T
	wantErr := json.Unmarshal(data, &want)
	rec := eventstore.Record{Event: eventstore.Event{Type: typ, Data: data}, StreamID: "s", Version: 1}
	got, err := eventstore.DecodeAs[T](reg, rec)
	if (err == nil) != (wantErr == nil) {
		t.Fatalf("DecodeAs(%q) error %v; encoding/json: %v", data, err, wantErr)
	}
	if err != nil {
		var de *eventstore.DecodeError
		if !asDecodeError(err, &de) || de.Err.Error() != wantErr.Error() {
			t.Fatalf("DecodeAs(%q) error %v; encoding/json: %v", data, err, wantErr)
		}
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("DecodeAs(%q) = %+v; encoding/json: %+v", data, got, want)
	}
	v, err := reg.Decode(rec)
	if err != nil || !reflect.DeepEqual(v, any(want)) {
		t.Fatalf("Decode(%q) = %+v, %v; encoding/json: %+v", data, v, err, want)
	}
}

func asDecodeError(err error, target **eventstore.DecodeError) bool {
	de, ok := err.(*eventstore.DecodeError)
	if ok {
		*target = de
	}
	return ok
}

func TestDecodeMatchesEncodingJSON(t *testing.T) {
	reg := eventstore.NewRegistry()
	if err := eventstore.Register[fuzzEvent](reg, "Event"); err != nil {
		t.Fatal(err)
	}
	if err := eventstore.Register[fuzzOther](reg, "Other"); err != nil {
		t.Fatal(err)
	}
	for _, s := range jsonSeeds {
		t.Run(strings.ReplaceAll(s, "/", "|"), func(t *testing.T) {
			checkDecode[fuzzEvent](t, reg, "Event", []byte(s))
			checkDecode[fuzzOther](t, reg, "Other", []byte(s))
		})
	}
}
