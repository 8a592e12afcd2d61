package projection

import "context"

// WithBeforeCommit sets a function called after a batch's records are
// applied and before its MULTI/EXEC.
func WithBeforeCommit(fn func(ctx context.Context, name string)) Option {
	return func(c *config) { c.beforeCommit = fn }
}

// WithKeepLease makes Run keep its leases when it stops, as a crashed
// process would.
func WithKeepLease() Option { return func(c *config) { c.keepLease = true } }

// NamespacePatterns returns the SCAN patterns of a namespace's keys in
// every partition.
func NamespacePatterns(prefix, name string, partitions int, v int64) []string {
	k := newKeys(prefix, name)
	var out []string
	for p := range partitions {
		out = append(out, k.versionPattern(p, v))
	}
	return out
}

// GlobEscape exposes globEscape.
func GlobEscape(s string) string { return globEscape(s) }
