package clustertest

import (
	"fmt"
	"testing"

	"github.com/eskit/eskit/internal/infra/localproc"
)

// ErrNotRunning is returned when a process is signalled that is not running.
var ErrNotRunning = localproc.ErrNotRunning

// mustBinary returns the path of name or fails tb, naming the Debian
// package that provides it.
func mustBinary(tb testing.TB, name, pkg string) string {
	tb.Helper()
	p, err := localproc.FindBinary(name)
	if err != nil {
		tb.Fatalf("clustertest: %v: install Debian's %s package (sudo apt-get install %s; make test and make test-cluster do it via scripts/cluster-deps.sh)", err, pkg, pkg)
	}
	return p
}

// wrap prefixes a localproc error with the package name.
func wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("clustertest: %w", err)
}
