package aggregate

// CachedStreams returns how many streams r's state cache holds.
func CachedStreams[S, C, E any](r *Repository[S, C, E]) int {
	if r.cache == nil {
		return 0
	}
	return r.cache.len()
}
