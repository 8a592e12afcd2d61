package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/eskit/eskit/internal/infra/embedded"
	"github.com/eskit/eskit/internal/infra/natstest"
	"github.com/eskit/eskit/internal/infra/testsvc"
)

// readmeHeading is the README section whose first Go listing is this
// program's README region.
const readmeHeading = "## Zero to a service\n"

// region returns the lines of main.go between the README markers.
func region(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile("main.go")
	require.NoError(t, err)
	_, rest, ok := strings.Cut(string(src), "// README:begin\n")
	require.True(t, ok, "no README:begin marker in main.go")
	body, _, ok := strings.Cut(rest, "// README:end\n")
	require.True(t, ok, "no README:end marker in main.go")
	return strings.TrimSpace(body) + "\n"
}

// listing returns the first Go code block of the README's section.
func listing(t *testing.T) string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(readme), "\n"+readmeHeading)
	require.True(t, ok, "no %q section in README.md", strings.TrimSpace(readmeHeading))
	_, code, ok := strings.Cut(section, "\n```go\n")
	require.True(t, ok, "no Go listing in the README's %q", strings.TrimSpace(readmeHeading))
	code, _, ok = strings.Cut(code, "\n```\n")
	require.True(t, ok, "unterminated Go listing")
	return strings.TrimSpace(code) + "\n"
}

// TestREADMEListingIsTheProgram: the README shows exactly what this
// program compiles and runs, so the two cannot drift apart.
func TestREADMEListingIsTheProgram(t *testing.T) {
	require.Equal(t, region(t), listing(t),
		"the README's %q listing differs from examples/zero/main.go between the README markers: copy one to the other",
		strings.TrimSpace(readmeHeading))
}

// TestRun runs the program on PostgreSQL (a fresh database), an
// in-process JetStream server and an in-process Redis.
func TestRun(t *testing.T) {
	nats := natstest.Start(t)
	rs, err := embedded.StartRedis("")
	require.NoError(t, err)
	t.Cleanup(rs.Close)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	db := testsvc.Database(t)
	for range 2 { // a second start finds the schema, the stream and the read model in place
		var out bytes.Buffer
		require.NoError(t, run(ctx, &out, db, nats.URL(), rs.URL()))
		require.Regexp(t, regexp.MustCompile(`^deposited at \d+-\d+; the read model says 100\n$`), out.String())
	}
}
