package procattr

import (
	"errors"
	"fmt"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// The memory-error kill policy (prctl(2) PR_MCE_KILL): whether the thread
// is killed early (as soon as a memory corruption is found in its pages)
// or late (when it touches them), instead of the system default
// (vm.memory_failure_early_kill). A thread flag, inherited by clone: set
// on the leader before the other threads are made. Recorded as
// PR_MCE_KILL_GET + 1, so that 0 is "not recorded".
type mceKillAttr struct{}

func (mceKillAttr) dump(c Caller, p *pb.Process) error {
	v, err := c.Call(unix.SYS_PRCTL, unix.PR_MCE_KILL_GET, 0, 0, 0, 0)
	if errors.Is(err, unix.EINVAL) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("injected prctl(PR_MCE_KILL_GET): %w", err)
	}
	if v == unix.PR_MCE_KILL_DEFAULT {
		return nil
	}
	p.MceKill = uint32(v) + 1
	return nil
}

func (mceKillAttr) restore(c Caller, p *pb.Process) error {
	if p.MceKill == 0 {
		return nil
	}
	v := uintptr(p.MceKill - 1)
	_, err := call(c, fmt.Sprintf("prctl(PR_MCE_KILL, PR_MCE_KILL_SET, %d)", v), unix.SYS_PRCTL, unix.PR_MCE_KILL, unix.PR_MCE_KILL_SET, v, 0, 0)
	return err
}

func (mceKillAttr) show(p *pb.Process) string {
	switch p.MceKill {
	case unix.PR_MCE_KILL_EARLY + 1:
		return "memory-error kill early"
	case unix.PR_MCE_KILL_LATE + 1:
		return "memory-error kill late"
	}
	return ""
}
