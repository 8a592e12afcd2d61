package pgstore

// SetLargeTable makes the store treat its events table as large (or
// small), as checkTableSize would once it has grown: tests reach both
// kinds of statements without filling a table.
func SetLargeTable(s *Store, large bool) { s.large.Store(large) }

// LargeTable reports whether the store treats its events table as large.
func LargeTable(s *Store) bool { return s.large.Load() }
