package dump

import (
	"fmt"
	"os"

	"github.com/lazycr/lazycr/proc"
)

// Capabilities restore needs (capabilities(7)): clone3 with set_tid and
// prctl(PR_SET_MM_MAP) need CAP_CHECKPOINT_RESTORE (Linux ≥ 5.9) or
// CAP_SYS_ADMIN in the process's user namespace.
const (
	capSysAdmin          = 21
	capCheckpointRestore = 40
)

// canRestore refuses a dump that kills the process (ModeKill) when lazycr
// runs without the capabilities a restore needs: ptrace of one's own
// process works unprivileged, so such a dump would succeed and take away
// a process its user could never bring back (it would live only in the
// image). --leave-running still works.
func canRestore(pid int) error {
	st, err := proc.ReadStatus(os.Getpid())
	if err != nil {
		return fmt.Errorf("dump pid %d: read lazycr's own capabilities: %w", pid, err)
	}
	if st.CapEff&(1<<capCheckpointRestore|1<<capSysAdmin) != 0 {
		return nil
	}
	return fmt.Errorf("dump pid %d: %w: restoring needs CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN), which lazycr lacks here (CapEff %#x), so the process would be killed with no way back; run as root, or use --leave-running to checkpoint it and keep it running", pid, ErrRefused, st.CapEff)
}
