package redact_test

import (
	"strings"
	"testing"

	"github.com/eskit/eskit/internal/redact"
)

func TestURLs(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                     "nats://127.0.0.1:4222",
		"nats://user:s3cret@h1:4222,nats://h2:4222": "nats://user:xxxxx@h1:4222,nats://h2:4222",
		"postgres://me:pw@db/x?sslmode=disable":     "postgres://me:xxxxx@db/x?sslmode=disable",
		"h1:4222":                                   "h1:4222",
		"user:s3cret@h1":                            "(redacted)",
		"nats://u:s3cret@[::1:4222":                 "(unparseable URL, redacted)",
	} {
		got := redact.URLs(in)
		if got != want {
			t.Errorf("URLs(%q) = %q, want %q", in, got, want)
		}
		if strings.Contains(got, "s3cret") || strings.Contains(got, "pw@") {
			t.Errorf("URLs(%q) = %q leaks the secret", in, got)
		}
	}
}
