package commandbus

import "time"

// SetClock replaces the store's clock.
func (m *MemoryStore) SetClock(now func() time.Time) { m.now = now }
