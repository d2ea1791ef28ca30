package dump

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/lazycr/lazycr/internal/kabi"
	"golang.org/x/sys/unix"
)

// sharedKinds are what clone(2) can share between two processes (without
// CLONE_THREAD) that restore rebuilds once per process: shared, they would
// come back as two copies, and a write, an open or a chdir of one would no
// longer reach the other, silently. CLONE_SIGHAND needs CLONE_VM, so the
// memory check covers it. See clone(2), kcmp(2).
var sharedKinds = []struct {
	typ        int
	what, lost string
}{
	{kabi.KCMP_VM, "its memory (clone(2) CLONE_VM without CLONE_THREAD: vfork, posix_spawn, a hand-made clone)", "a write of one would no longer reach the other"},
	{kabi.KCMP_FILES, "its file descriptor table (clone(2) CLONE_FILES)", "an fd one opens or closes would no longer be the other's"},
	{kabi.KCMP_FS, "its current directory, root and umask (clone(2) CLONE_FS)", "a chdir of one would no longer move the other"},
}

// refuseSharedContexts refuses a live member that shares its memory, fd
// table or filesystem context with another process, a member or not:
// restore makes each member's anew. Every process of the host is compared
// (kcmp(2), no injection; one a permission hides cannot be compared and is
// passed over). Run under the freeze: the members cannot clone meanwhile.
func refuseSharedContexts(root int, live map[int]bool) error {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return fmt.Errorf("dump pid %d: list processes: %w", root, err)
	}
	var others []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 0 {
			others = append(others, pid)
		}
	}
	for pid := range live {
		for _, o := range others {
			if o == pid {
				continue
			}
			for _, k := range sharedKinds {
				same, err := kabi.Kcmp(pid, o, k.typ)
				if errors.Is(err, unix.ESRCH) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
					break
				}
				if err != nil {
					return fmt.Errorf("dump pid %d: compare pid %d with pid %d: %w", root, pid, o, err)
				}
				if same {
					return fmt.Errorf("dump pid %d: %w: pid %d shares %s with pid %d: restored, each would have its own (%s)",
						root, ErrUnsupported, pid, k.what, o, k.lost)
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
