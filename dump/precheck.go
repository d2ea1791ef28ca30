package dump

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/lazycr/lazycr/files"
	"github.com/lazycr/lazycr/inject"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
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
	if isAncestor(pid) {
		return fmt.Errorf("dump pid %d: %w: it is an ancestor of this lazycr (pid %d): a dump takes a process with all its descendants, lazycr among them", pid, ErrRefused, os.Getpid())
	}
	if cmd := lazycrCommand(pid); cmd != "" {
		return fmt.Errorf("dump pid %d: %w: it is lazycr %s, another run of lazycr: its image would hold that run's session (its secret, the processes it acts on), and a restored copy would act on them a second time", pid, ErrRefused, cmd)
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
	// Credentials and capabilities are relative to the process's user
	// namespace (user_namespaces(7)): a process of a user namespace of its
	// own (a rootless container's) cannot be restored with them (restore
	// refuses such an image, restore/state.go setCreds), so it is not
	// dumped, and above all not killed, either.
	if theirs, err := proc.NamespaceInode(pid, "user"); err == nil {
		if mine, err := proc.SelfNs("user"); err == nil && theirs != mine.Ino {
			return fmt.Errorf("dump pid %d: %w: it runs in user namespace user:[%d], not lazycr's user:[%d]: its uids and capabilities are that namespace's, which restore does not make", pid, ErrUnsupported, theirs, mine.Ino)
		}
	}
	// A lock lazycr cannot restore refuses the dump before the freeze.
	// Under the freeze files.dumpLocks reads each fd's locks anyway and
	// refuses the same ones (files.LockRefusal), so this is not repeated.
	return checkLocks(pid)
}

// lazycrCommand returns "dump" or "restore" if pid runs this lazycr
// executable (the same file as /proc/self/exe) with that command (a lazy
// source serving, a lazy target or its keeper), else "". lazycr running
// anything else (the demo's `lazycr udpp` client) is an ordinary process.
func lazycrCommand(pid int) string {
	var mine, theirs unix.Stat_t
	if unix.Stat("/proc/self/exe", &mine) != nil || unix.Stat(fmt.Sprintf("/proc/%d/exe", pid), &theirs) != nil ||
		mine.Dev != theirs.Dev || mine.Ino != theirs.Ino {
		return ""
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return ""
	}
	for _, a := range bytes.Split(b, []byte{0}) {
		if s := string(a); s == "dump" || s == "restore" {
			return s
		}
	}
	return ""
}

// maxNamedLocks bounds how many locks a refusal names.
const maxNamedLocks = 8

// checkLocks refuses a process that holds a file lock lazycr cannot
// restore exactly (a lease, a mandatory lock, a waiter: see
// [files.LockRefusal]): a restored process would not hold it, and another
// process could then take it and write what the lock protected. Advisory
// flock, POSIX and OFD locks are recorded by the fd dump and re-taken by
// restore (files/lock.go). The "lock:" lines of /proc/PID/fdinfo/FD list
// the locks and leases taken through each open file description
// (proc(5)); /proc/locks shows OFD locks with pid -1, so it cannot say
// whose they are, and reading it takes a system-wide write lock on file
// locking (locks_start in fs/locks.c, measured here at 0.26-0.8 ms). This
// runs again while the process is frozen, so each fd costs one short read
// of the head of its fdinfo, where the lock lines are (seq_show in
// fs/proc/fd.c prints them right after pos, flags, mnt_id and ino); only
// an fd with a lock line is parsed.
func checkLocks(pid int) error {
	fds, err := proc.ReadFds(pid)
	if err != nil {
		return fmt.Errorf("dump pid %d: list fds: %w", pid, err)
	}
	var refused []string
	n := 0
	buf := make([]byte, 4096)
	for _, fd := range fds {
		if !fdinfoHasLock(pid, fd.Num, buf) {
			continue
		}
		fi, err := proc.ReadFdInfo(pid, fd.Num)
		if errors.Is(err, os.ErrNotExist) {
			continue // closed since the listing
		}
		if err != nil {
			return fmt.Errorf("dump pid %d: fd %d (%s): %w", pid, fd.Num, fd.Target, err)
		}
		for i := range fi.Locks {
			lerr := files.LockRefusal(&fi.Locks[i])
			if lerr == nil {
				continue
			}
			n++
			if len(refused) < maxNamedLocks {
				refused = append(refused, fmt.Sprintf("fd %d (%s): %s", fd.Num, fd.Target, strings.TrimPrefix(lerr.Error(), files.ErrUnsupported.Error()+": ")))
			}
		}
	}
	if n == 0 {
		return nil
	}
	if n > len(refused) {
		refused = append(refused, fmt.Sprintf("and %d more", n-len(refused)))
	}
	return fmt.Errorf("dump pid %d: %w: it holds %d file locks or leases that lazycr cannot restore: %s", pid, ErrUnsupported, n, strings.Join(refused, "; "))
}

// fdinfoHasLock reports whether the head of /proc/PID/fdinfo/FD (read into
// buf) has a "lock:" line. An fd it cannot read counts as having one, so
// that ReadFdInfo reports why.
func fdinfoHasLock(pid, fd int, buf []byte) bool {
	f, err := unix.Open(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return !errors.Is(err, unix.ENOENT)
	}
	defer unix.Close(f)
	got := 0
	for got < len(buf) {
		m, err := unix.Read(f, buf[got:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return true
		}
		if m == 0 {
			break
		}
		got += m
	}
	return bytes.Contains(buf[:got], []byte("\nlock:"))
}
