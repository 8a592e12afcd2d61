// Package redact keeps secrets out of logs and errors: it hides the
// passwords of service URLs before they are printed.
package redact

import (
	"net/url"
	"strings"
)

// URLs returns s, one URL or several separated by commas (as NATS takes
// them), with every password replaced by "xxxxx". A part that does not
// parse as a URL is replaced entirely, since it may hold a secret in a form
// this function does not know.
func URLs(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = one(strings.TrimSpace(p))
	}
	return strings.Join(parts, ",")
}

func one(s string) string {
	if s == "" {
		return s
	}
	if !strings.Contains(s, "://") {
		if strings.Contains(s, "@") {
			return "(redacted)"
		}
		return s // host:port
	}
	u, err := url.Parse(s)
	if err != nil {
		return "(unparseable URL, redacted)"
	}
	return u.Redacted()
}
