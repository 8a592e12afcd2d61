package bench

import (
	"fmt"
	"os/exec"

	"github.com/eskit/eskit/internal/infra/localproc"
)

// childStarted, when set (by tests), is told the PID of every child
// started: Redis Cluster nodes and runners of project-partitioned.
var childStarted func(pid int)

func noteChild(pid int) {
	if childStarted != nil {
		childStarted(pid)
	}
}

// startChild starts cmd as a child named name (for messages), in its own
// process group, to be stopped by its PID.
func startChild(name string, cmd *exec.Cmd) (*localproc.Process, error) {
	p, err := localproc.Start(name, cmd)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	noteChild(p.PID())
	return p, nil
}

// killChild kills p's process group by PID and waits until it has exited.
func killChild(p *localproc.Process) error {
	if err := p.Kill(); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return nil
}

// findBinary looks name up (see localproc.FindBinary); the error names the
// Debian package that provides it and the flag that names a running
// server instead.
func findBinary(name, pkg, flag string) (string, error) {
	p, err := localproc.FindBinary(name)
	if err != nil {
		return "", fmt.Errorf("bench: %v: install Debian's %s package (make cluster-deps), or pass -%s", err, pkg, flag)
	}
	return p, nil
}
