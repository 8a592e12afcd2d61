package snapshot

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Memory is an in-memory Store, safe for concurrent use.
type Memory struct {
	mu    sync.RWMutex
	snaps map[string]Snapshot
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory { return &Memory{snaps: make(map[string]Snapshot)} }

// Load implements Store.
func (m *Memory) Load(ctx context.Context, streamID string) (Snapshot, error) {
	if err := ctx.Err(); err != nil {
		return Snapshot{}, err
	}
	m.mu.RLock()
	s, ok := m.snaps[streamID]
	m.mu.RUnlock()
	if !ok {
		return Snapshot{}, &NotFoundError{StreamID: streamID}
	}
	s.State = slices.Clone(s.State)
	return s, nil
}

// Save implements Store.
func (m *Memory) Save(ctx context.Context, s Snapshot) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := Validate(s); err != nil {
		return err
	}
	s.State = slices.Clone(s.State)
	if s.TakenAt.IsZero() {
		s.TakenAt = time.Now()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur, ok := m.snaps[s.StreamID]; ok && cur.Version > s.Version {
		return nil
	}
	m.snaps[s.StreamID] = s
	return nil
}

// Delete implements Store.
func (m *Memory) Delete(ctx context.Context, streamID string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	delete(m.snaps, streamID)
	m.mu.Unlock()
	return nil
}
