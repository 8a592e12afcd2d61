package eventstore

// StreamBuckets is the fixed number of buckets stream IDs hash into. The
// relay puts a record's bucket in its subject and partitioned projections
// assign whole buckets to partitions, so the number never changes.
const StreamBuckets = 256

// StreamBucket returns the bucket of a stream ID: the 32-bit FNV-1a hash of
// its bytes, modulo StreamBuckets. The function is part of the contract:
// subjects and projection partitions stored by one version of eskit must
// mean the same in every later one.
func StreamBucket(streamID string) int {
	h := uint32(2166136261)
	for i := 0; i < len(streamID); i++ {
		h ^= uint32(streamID[i])
		h *= 16777619
	}
	return int(h % StreamBuckets)
}

// BucketPartition returns the partition (0 ≤ p < partitions) that a bucket
// belongs to when its streams are shared among partitions: bucket modulo
// partitions. partitions must be between 1 and StreamBuckets.
func BucketPartition(bucket, partitions int) int {
	if partitions <= 1 {
		return 0
	}
	return bucket % partitions
}

// StreamPartition returns the partition of a stream among partitions
// partitions: BucketPartition(StreamBucket(streamID), partitions). Every
// event of a stream belongs to the same partition.
func StreamPartition(streamID string, partitions int) int {
	return BucketPartition(StreamBucket(streamID), partitions)
}
