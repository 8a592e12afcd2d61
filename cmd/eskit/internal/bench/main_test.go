package bench

import (
	"os"
	"testing"
)

// TestMain lets the test binary serve as a runner process of
// project-partitioned (the bench re-executes its own binary for them).
func TestMain(m *testing.M) {
	RunChildIfRequested()
	os.Exit(m.Run())
}
