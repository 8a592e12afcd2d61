package pgstore

func ExpLoadSQL(s *Store) string { return s.q.loadWithSnapshot }
