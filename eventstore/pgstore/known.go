package pgstore

import "sync"

// knownVersionsLimit bounds how many streams a Store remembers a version
// of.
const knownVersionsLimit = 1 << 16

// knownVersions remembers, per stream, a version the store has seen
// committed: the result of one of its appends on the pool, or an event it
// read. Events are never deleted, so the stream has that version for ever,
// and an append that expects a version up to it needs no probe of the
// expected event (see appendSingle): the unique (stream, version) key alone
// refuses an append to a stream that has moved on. It is bounded: beyond
// knownVersionsLimit streams, an arbitrary one is forgotten for each new
// one (a forgotten stream only costs its next append a probe).
type knownVersions struct {
	mu sync.Mutex
	m  map[string]int64
}

// note records that stream has version v.
func (k *knownVersions) note(stream string, v int64) {
	if v <= 0 {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if cur, ok := k.m[stream]; ok {
		if v > cur {
			k.m[stream] = v
		}
		return
	}
	if k.m == nil {
		k.m = make(map[string]int64)
	}
	if len(k.m) >= knownVersionsLimit {
		for s := range k.m {
			delete(k.m, s)
			break
		}
	}
	k.m[stream] = v
}

// has reports whether stream is known to have version v.
func (k *knownVersions) has(stream string, v int64) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.m[stream] >= v
}
