package dump

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/lazycr/lazycr/internal/kabi"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// sharedKinds are what clone(2) can share between two processes (without
// CLONE_THREAD) that restore rebuilds once per process: shared, they would
// come back as two copies, and a write, an open or a chdir of one would no
// longer reach the other, silently. CLONE_SIGHAND needs CLONE_VM, so the
// memory check covers it. See clone(2), kcmp(2).
var sharedKinds = []struct {
	typ               int
	short, flag, lost string
}{
	{kabi.KCMP_VM, "its memory", "CLONE_VM without CLONE_THREAD: vfork, posix_spawn, a hand-made clone", "a write of one would no longer reach the other"},
	{kabi.KCMP_FILES, "its file descriptor table", "CLONE_FILES", "an fd one opens or closes would no longer be the other's"},
	{kabi.KCMP_FS, "its current directory, root and umask", "CLONE_FS", "a chdir of one would no longer move the other"},
}

// refuseSharedContexts refuses a live member that shares its memory, fd
// table or filesystem context with another process, a member or not:
// restore makes each member's anew. Every process of the host is compared
// (kcmp(2), no injection; one a permission hides cannot be compared and is
// passed over). Run under the freeze: the members cannot clone meanwhile.
// A member is compared through a live thread: a leader that exited has no
// memory left, and kcmp finds two such (or a kernel thread's) equal.
func (cp *Checkpoint) refuseSharedContexts() error {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return fmt.Errorf("dump pid %d: list processes: %w", cp.pid, err)
	}
	var others []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 0 {
			others = append(others, pid)
		}
	}
	for _, m := range append([]*Checkpoint{cp}, cp.members...) {
		if m.zombie {
			continue
		}
		ref := m.liveThread()
		for _, o := range others {
			if o == m.pid {
				continue
			}
			for _, k := range sharedKinds {
				same, err := kabi.Kcmp(ref, o, k.typ)
				if errors.Is(err, unix.ESRCH) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
					break
				}
				if err != nil {
					return fmt.Errorf("dump pid %d: compare pid %d with pid %d: %w", cp.pid, m.pid, o, err)
				}
				if same && kernelThread(o) {
					// A kernel thread may borrow a process's memory for
					// a moment (kthread_use_mm: a kworker finishing its
					// I/O): not a sharer.
					break
				}
				if same {
					return fmt.Errorf("dump pid %d: %w: pid %d shares %s (clone(2) %s) with pid %d: restored, each would have its own (%s)",
						cp.pid, ErrUnsupported, m.pid, k.short, k.flag, o, k.lost)
				}
			}
		}
	}
	return nil
}

// kernelThread reports whether pid is a kernel thread.
func kernelThread(pid int) bool {
	st, err := proc.ReadStatus(pid)
	return err == nil && st.Kthread
}

// liveThread is the id of the leader, or of the first other thread when
// the leader exited (pthread_exit) and the others run on: a thread that
// exited has no memory, fd table or fs left, and kcmp finds two such
// missing ones equal.
func (m *Checkpoint) liveThread() int {
	for _, tid := range append([]int{m.pid}, m.proc.Threads()...) {
		if st, err := proc.ReadTaskStatus(m.pid, tid); err == nil && st.State != 'Z' && st.State != 'X' {
			return tid
		}
	}
	return m.pid
}

// refuseThreadContexts refuses a thread whose fd table or filesystem
// context is not its process's: one that called unshare(2) CLONE_FILES or
// CLONE_FS (or was cloned without them). Restore makes threads that share
// the leader's, so the thread's own fds would be gone and its cwd the
// leader's. kcmp(2) takes thread ids as well as process ids.
func (cp *Checkpoint) refuseThreadContexts() error {
	for _, m := range append([]*Checkpoint{cp}, cp.members...) {
		if m.zombie {
			continue
		}
		ref := m.liveThread()
		for _, tid := range m.proc.Threads() {
			if tid == ref || tid == m.pid && ref != m.pid {
				continue
			}
			for _, k := range sharedKinds[1:] {
				same, err := kabi.Kcmp(ref, tid, k.typ)
				if err != nil {
					return fmt.Errorf("dump pid %d: compare thread %d with thread %d: %w", cp.pid, tid, ref, err)
				}
				if !same {
					return fmt.Errorf("dump pid %d: %w: pid %d thread %d does not share %s with thread %d (unshare(2) %s in the thread): restored threads all share one",
						cp.pid, ErrUnsupported, m.pid, tid, k.short, ref, k.flag)
				}
			}
		}
	}
	return nil
}

// refuseSyscallUserDispatch refuses a thread with syscall user dispatch on
// (prctl(2) PR_SET_SYSCALL_USER_DISPATCH; Wine runs Windows code under
// it): restore does not set it again, so the syscalls it was to catch
// would run as Linux syscalls. Read with ptrace alone, before anything is
// injected: a thread whose selector blocks syscalls would turn an injected
// one into a SIGSYS.
func (cp *Checkpoint) refuseSyscallUserDispatch() error {
	for _, m := range append([]*Checkpoint{cp}, cp.members...) {
		if m.zombie {
			continue
		}
		for _, tid := range m.proc.Threads() {
			on, _, err := m.proc.SyscallUserDispatch(tid)
			if err != nil {
				return fmt.Errorf("dump pid %d: %w", cp.pid, err)
			}
			if on {
				return fmt.Errorf("dump pid %d: %w: pid %d thread %d has syscall user dispatch on (prctl PR_SET_SYSCALL_USER_DISPATCH), which restore does not set again: the syscalls it catches would run",
					cp.pid, ErrUnsupported, m.pid, tid)
			}
		}
	}
	return nil
}
