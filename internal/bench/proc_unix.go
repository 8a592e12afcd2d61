//go:build unix && !linux

package bench

import "syscall"

// childAttr puts a child process in its own process group, so a signal
// reaches whatever it forks.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
