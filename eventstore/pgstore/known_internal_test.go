package pgstore

import (
	"strconv"
	"testing"
)

func TestKnownVersions(t *testing.T) {
	var k knownVersions
	if k.has("a", 1) {
		t.Fatal("an empty cache knows a stream")
	}
	k.note("a", 3)
	k.note("a", 2) // never goes back
	k.note("b", 0) // not a version
	for v, want := range map[int64]bool{1: true, 3: true, 4: false} {
		if k.has("a", v) != want {
			t.Errorf("has(a, %d) = %v", v, !want)
		}
	}
	if k.has("b", 1) {
		t.Error("knows b")
	}
	for i := range knownVersionsLimit + 10 {
		k.note("s"+strconv.Itoa(i), 1)
	}
	if len(k.m) != knownVersionsLimit {
		t.Fatalf("%d streams remembered, limit %d", len(k.m), knownVersionsLimit)
	}
}
