package eventstore_test

import (
	"hash/fnv"
	"strconv"
	"testing"

	"github.com/eskit/eskit/eventstore"
)

// The bucket function is stored in subjects and partition assignments:
// its values must never change.
func TestStreamBucketIsStable(t *testing.T) {
	pinned := map[string]int{"": 0xc5, "a": 0x2c, "account-1": 0x96}
	for id, want := range pinned {
		if got := eventstore.StreamBucket(id); got != want {
			t.Errorf("StreamBucket(%q) = %#x, want %#x", id, got, want)
		}
	}
	for _, id := range []string{"account-2", "transfer-7f", "ünïcode", "a.b*c>", " edge "} {
		h := fnv.New32a()
		_, _ = h.Write([]byte(id))
		if got, want := eventstore.StreamBucket(id), int(h.Sum32()%eventstore.StreamBuckets); got != want {
			t.Errorf("StreamBucket(%q) = %d, want FNV-1a mod 256 = %d", id, got, want)
		}
	}
}

func TestStreamPartitionSpreadsAndStays(t *testing.T) {
	const streams = 20000
	for _, n := range []int{1, 2, 3, 4, 7, 16, 256} {
		counts := make([]int, n)
		for i := range streams {
			id := "account-" + strconv.Itoa(i)
			p := eventstore.StreamPartition(id, n)
			if p < 0 || p >= n {
				t.Fatalf("StreamPartition(%q, %d) = %d", id, n, p)
			}
			if p != eventstore.BucketPartition(eventstore.StreamBucket(id), n) {
				t.Fatalf("StreamPartition(%q, %d) disagrees with its bucket", id, n)
			}
			counts[p]++
		}
		for p, c := range counts {
			if want := streams / n; c < want/2 || c > want*2 {
				t.Errorf("partitions=%d: partition %d got %d of %d streams", n, p, c, streams)
			}
		}
	}
}
