package pgstore

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/eskit/eskit/eventstore"
)

var metadataSeeds = []string{
	`{}`, ` { } `, `{"correlation_id":"0190b2a4-7f1c-7c3e-9a51-3f5d2e8b6c11","causation_id":"x"}`,
	`{"a":"1","a":"2"}`, `{"é":"€"}`, `{"q":"say \"hi\""}`, `{"t":"a\tb"}`, "{\"bad\":\"\xff\"}",
	`{"n":1}`, `{"n":null}`, `{"n":"1",}`, `{"n":"1"} x`, `{"n":"1"`, `[]`, `null`, ``, `{"n" "1"}`,
	"{\"c\":\"a\x01b\"}", `{"u":"\u00e9"}`, "{\n\"a\" : \"b\" ,\r\n \"c\":\"d\"\t}",
}

// decodeMetadata decodes what encoding/json decodes, into the same map.
func FuzzDecodeMetadata(f *testing.F) {
	for _, s := range metadataSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkMetadata(t, b)
	})
}

func TestDecodeMetadata(t *testing.T) {
	for _, s := range metadataSeeds {
		checkMetadata(t, []byte(s))
	}
	md := eventstore.Metadata{"correlation_id": "c", "schema_version": "2", "quote": `"`, "unicode": "é"}
	b, err := encodeMetadata(md)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeMetadata(b)
	if err != nil || !reflect.DeepEqual(got, md) {
		t.Fatalf("round trip of %v: %v, %v", md, got, err)
	}
	if _, ok := scanFlatObject([]byte(`{"correlation_id":"c","causation_id":"d"}`)); !ok {
		t.Fatal("the scanner left plain metadata to encoding/json")
	}
}

func checkMetadata(t *testing.T, b []byte) {
	t.Helper()
	var want eventstore.Metadata
	wantErr := json.Unmarshal(b, &want)
	got, err := decodeMetadata(b)
	if (err == nil) != (wantErr == nil) {
		t.Fatalf("decodeMetadata(%q) error %v; encoding/json: %v", b, err, wantErr)
	}
	if err == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("decodeMetadata(%q) = %#v; encoding/json: %#v", b, got, want)
	}
}

// Payload copies share chunks without overlapping.
func TestPayloadBuffer(t *testing.T) {
	var b payloadBuffer
	var out [][]byte
	for i := range 3000 {
		p := make([]byte, i%700)
		for j := range p {
			p[j] = byte(i)
		}
		out = append(out, b.copy(p))
	}
	for i, p := range out {
		if len(p) != i%700 || cap(p) != len(p) {
			t.Fatalf("copy %d: len %d cap %d", i, len(p), cap(p))
		}
		for _, c := range p {
			if c != byte(i) {
				t.Fatalf("copy %d was overwritten", i)
			}
		}
	}
	big := make([]byte, maxPayloadChunk)
	if got := b.copy(big); len(got) != len(big) {
		t.Fatalf("large copy: %d bytes", len(got))
	}
}
