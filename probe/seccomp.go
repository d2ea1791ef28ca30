package probe

import (
	"fmt"

	"github.com/lazycr/lazycr/internal/kabi"
	"golang.org/x/sys/unix"
)

const nameSuspendSeccomp = "ptrace-suspend-seccomp"

// probeSuspendSeccomp sets PTRACE_O_SUSPEND_SECCOMP on the seized child.
// lazycr needs it for a process under seccomp: the syscalls it injects
// would otherwise be filtered (ptrace(2): it needs CAP_SYS_ADMIN, a tracer
// not itself under seccomp, and CONFIG_CHECKPOINT_RESTORE, else EINVAL).
// Other processes do without, so it is not required.
func probeSuspendSeccomp(c *child) Result {
	if err := kabi.PtraceData(unix.PTRACE_SETOPTIONS, c.pid, 0, unix.PTRACE_O_EXITKILL|unix.PTRACE_O_SUSPEND_SECCOMP); err != nil {
		return fail(nameSuspendSeccomp, false, fmt.Errorf("set PTRACE_O_SUSPEND_SECCOMP on pid %d (processes under seccomp are refused): %w", c.pid, err))
	}
	if err := kabi.PtraceData(unix.PTRACE_SETOPTIONS, c.pid, 0, unix.PTRACE_O_EXITKILL); err != nil {
		return fail(nameSuspendSeccomp, false, fmt.Errorf("clear PTRACE_O_SUSPEND_SECCOMP on pid %d: %w", c.pid, err))
	}
	return Result{Name: nameSuspendSeccomp, OK: true,
		Detail: "PTRACE_O_SUSPEND_SECCOMP works: processes under seccomp filters can be dumped and restored"}
}
