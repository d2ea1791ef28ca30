package dump

import (
	"errors"
	"fmt"
	"os"
	"strings"

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
			// others run on: dumped from a live thread, restored with the
			// leader exiting again (see pb.Process.leader_exited).
			break
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
	return checkLocks(pid)
}

// maxNamedLocks bounds how many locks a refusal names.
const maxNamedLocks = 8

// checkLocks refuses a process that holds a file lock or lease: a restored
// process would not hold it, and another process could then take it and
// write what the lock protected (a sqlite3 transaction's rows). The
// "lock:" lines of /proc/PID/fdinfo/FD list the flock, POSIX (fcntl) and
// OFD locks and leases taken through each open file description (proc(5));
// /proc/locks shows OFD locks with pid -1, so it cannot say whose they are.
func checkLocks(pid int) error {
	fds, err := proc.ReadFds(pid)
	if err != nil {
		return fmt.Errorf("dump pid %d: list fds: %w", pid, err)
	}
	var held []string
	n := 0
	for _, fd := range fds {
		fi, err := proc.ReadFdInfo(pid, fd.Num)
		if errors.Is(err, os.ErrNotExist) {
			continue // closed since the listing
		}
		if err != nil {
			return fmt.Errorf("dump pid %d: fd %d (%s): %w", pid, fd.Num, fd.Target, err)
		}
		for _, l := range fi.Locks {
			if l.Blocked {
				continue // a waiter, not a holder
			}
			n++
			if len(held) < maxNamedLocks {
				held = append(held, fmt.Sprintf("fd %d (%s): %s", fd.Num, fd.Target, l.Describe()))
			}
		}
	}
	if n == 0 {
		return nil
	}
	if n > len(held) {
		held = append(held, fmt.Sprintf("and %d more", n-len(held)))
	}
	return fmt.Errorf("dump pid %d: %w: it holds %d file locks, which lazycr does not restore yet: %s", pid, ErrUnsupported, n, strings.Join(held, "; "))
}
