package dump

import (
	"errors"
	"fmt"
	"os"

	"github.com/lazycr/lazycr/inject"
	"github.com/lazycr/lazycr/proc"
)

// precheck refuses, before anything touches the process, what lazycr cannot
// or must not dump.
func precheck(pid int) error {
	if pid == 1 {
		return fmt.Errorf("dump pid 1: %w: it is the init process of this PID namespace", ErrRefused)
	}
	if pid == os.Getpid() {
		return fmt.Errorf("dump pid %d: %w: that is lazycr itself", pid, ErrRefused)
	}
	st, err := proc.ReadStatus(pid)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("dump pid %d: %w", pid, inject.ErrNoProcess)
		}
		return fmt.Errorf("dump pid %d: %w", pid, err)
	}
	if st.Kthread {
		return fmt.Errorf("dump pid %d: %w: it is a kernel thread", pid, ErrRefused)
	}
	if st.Tgid != pid {
		return fmt.Errorf("dump pid %d: %w: it is a thread of process %d; dump the process", pid, ErrRefused, st.Tgid)
	}
	switch st.State {
	case 'Z':
		if st.Threads > 1 {
			// The main thread called pthread_exit (or SYS_exit) and the
			// others run on: /proc/PID shows no memory or fds any more,
			// and a restored process cannot have a dead leader.
			return fmt.Errorf("dump pid %d: %w: its main thread has exited while %d other threads run (pthread_exit in main)", pid, ErrUnsupported, st.Threads-1)
		}
		return fmt.Errorf("dump pid %d: %w", pid, inject.ErrZombie)
	case 'X':
		return fmt.Errorf("dump pid %d: %w", pid, inject.ErrNoProcess)
	}
	if st.TracerPid != 0 {
		return fmt.Errorf("dump pid %d: %w by pid %d", pid, inject.ErrTraced, st.TracerPid)
	}
	return precheckFrozen(pid)
}

// precheckFrozen holds the checks that are repeated once the process is
// frozen, when its state can no longer change under us.
func precheckFrozen(pid int) error {
	st, err := proc.ReadStatus(pid)
	if err != nil {
		return fmt.Errorf("dump pid %d: %w", pid, err)
	}
	if st.Seccomp != 0 {
		return fmt.Errorf("dump pid %d: %w: seccomp mode %d with %d filters", pid, ErrUnsupported, st.Seccomp, st.SeccompFilters)
	}
	children, err := proc.Children(pid)
	if err != nil {
		return fmt.Errorf("dump pid %d: %w", pid, err)
	}
	if len(children) > 0 {
		return fmt.Errorf("dump pid %d: %w: it has child processes %v (process trees are not supported yet)", pid, ErrUnsupported, children)
	}
	return nil
}
