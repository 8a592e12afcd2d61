package bench

import "syscall"

// childAttr puts a child process in its own process group (so a signal
// reaches whatever it forks) and has the kernel kill it when the thread
// that started it dies, so a bench killed before its clean-up leaves no
// child behind.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
