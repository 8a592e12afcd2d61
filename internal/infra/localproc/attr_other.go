//go:build unix && !linux

package localproc

import "syscall"

// sysProcAttr puts a child process in its own process group, so a signal
// reaches whatever it forks.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
