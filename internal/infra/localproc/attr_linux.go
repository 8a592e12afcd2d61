package localproc

import "syscall"

// sysProcAttr puts a child process in its own process group (so a signal
// reaches whatever it forks: redis-server forks for BGSAVE and AOF
// rewrites) and has the kernel kill it when the thread that started it
// dies, so a test or bench killed before its clean-up leaves no child
// behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
