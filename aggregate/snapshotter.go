package aggregate

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eskit/eskit/snapshot"
)

// SnapshotStats counts the background snapshotter's work.
type SnapshotStats struct {
	// Saved is the number of snapshots saved.
	Saved uint64
	// Failed is the number of snapshots that could not be encoded or saved.
	Failed uint64
	// Dropped is the number of requests dropped because the queue was full
	// or the repository closed.
	Dropped uint64
	// Coalesced is the number of requests that replaced an older request
	// for the same stream.
	Coalesced uint64
}

type snapshotJob struct {
	streamID string
	version  int64
	state    any
}

// snapshotter saves snapshots on its own goroutine. Requests wait in a
// bounded queue keyed by stream: a newer request for a waiting stream
// replaces the older one, and requests beyond the bound are dropped, so
// enqueueing never blocks.
type snapshotter struct {
	store         snapshot.Store
	codec         snapshot.StateCodec
	schemaVersion int
	capacity      int
	timeout       time.Duration
	logger        *slog.Logger

	mu       sync.Mutex
	pending  map[string]snapshotJob
	order    []string
	enqueued uint64 // requests accepted so far
	handled  uint64 // requests accepted before the last finished batch
	closed   bool
	progress chan struct{} // closed and replaced after each batch
	wake     chan struct{}
	done     chan struct{}

	saved, failed, dropped, coalesced atomic.Uint64
}

func newSnapshotter(c *config) *snapshotter {
	s := &snapshotter{
		store:         c.snapshots,
		codec:         c.codec,
		schemaVersion: c.schemaVersion,
		capacity:      c.queueSize,
		timeout:       c.snapshotTimeout,
		logger:        c.logger,
		pending:       make(map[string]snapshotJob),
		progress:      make(chan struct{}),
		wake:          make(chan struct{}, 1),
		done:          make(chan struct{}),
	}
	go s.run()
	return s
}

// enqueue asks for a snapshot of state at version; it never blocks.
func (s *snapshotter) enqueue(streamID string, version int64, state any) {
	s.mu.Lock()
	switch prev, ok := s.pending[streamID]; {
	case s.closed:
		s.mu.Unlock()
		s.dropped.Add(1)
		return
	case ok:
		if version >= prev.version {
			s.pending[streamID] = snapshotJob{streamID, version, state}
		}
		s.enqueued++
		s.mu.Unlock()
		s.coalesced.Add(1)
		return
	case len(s.pending) >= s.capacity:
		s.mu.Unlock()
		s.dropped.Add(1)
		s.logger.Debug("aggregate: snapshot queue full, request dropped", "stream", streamID, "version", version)
		return
	}
	s.pending[streamID] = snapshotJob{streamID, version, state}
	s.order = append(s.order, streamID)
	s.enqueued++
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *snapshotter) run() {
	defer close(s.done)
	for {
		s.mu.Lock()
		for len(s.pending) == 0 {
			if s.closed {
				s.mu.Unlock()
				return
			}
			s.mu.Unlock()
			<-s.wake
			s.mu.Lock()
		}
		batch := make([]snapshotJob, 0, len(s.order))
		for _, id := range s.order {
			batch = append(batch, s.pending[id])
		}
		clear(s.pending)
		s.order = s.order[:0]
		upTo := s.enqueued
		s.mu.Unlock()

		for _, job := range batch {
			s.save(job)
		}

		s.mu.Lock()
		s.handled = upTo
		close(s.progress)
		s.progress = make(chan struct{})
		s.mu.Unlock()
	}
}

func (s *snapshotter) save(job snapshotJob) {
	data, err := s.codec.Marshal(job.state)
	if err != nil {
		s.failed.Add(1)
		s.logger.Error("aggregate: cannot encode snapshot state", "stream", job.streamID, "version", job.version, "error", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	err = s.store.Save(ctx, snapshot.Snapshot{
		StreamID:      job.streamID,
		Version:       job.version,
		SchemaVersion: s.schemaVersion,
		State:         data,
		TakenAt:       time.Now(),
	})
	if err != nil {
		s.failed.Add(1)
		s.logger.Error("aggregate: cannot save snapshot", "stream", job.streamID, "version", job.version, "error", err)
		return
	}
	s.saved.Add(1)
}

// flush waits until every request enqueued before the call is handled.
func (s *snapshotter) flush(ctx context.Context) error {
	s.mu.Lock()
	target := s.enqueued
	s.mu.Unlock()
	for {
		s.mu.Lock()
		if s.handled >= target {
			s.mu.Unlock()
			return nil
		}
		ch := s.progress
		s.mu.Unlock()
		select {
		case <-ch:
		case <-s.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// close stops accepting requests, saves those waiting and stops the
// goroutine.
func (s *snapshotter) close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	s.mu.Unlock()
	<-s.done
}

func (s *snapshotter) stats() SnapshotStats {
	return SnapshotStats{
		Saved:     s.saved.Load(),
		Failed:    s.failed.Load(),
		Dropped:   s.dropped.Load(),
		Coalesced: s.coalesced.Load(),
	}
}
