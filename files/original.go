package files

import (
	"fmt"
	"os"

	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// fdOfFrozenOriginal copies fd of the dumped process into lazycr with
// pidfd_getfd(2) (the same open file description), for a post-copy restore
// on the host it was dumped on that takes an object over instead of making
// it afresh: only if the image comes from this boot and the dumped pid is
// stopped by a tracer (the source's freeze: a running original, e.g. a
// released source, would go on using the object). The error says which of
// that does not hold; on success the caller closes local and checks it is
// the object the image describes (st).
func (r *restorer) fdOfFrozenOriginal(fd int32) (local int, st unix.Stat_t, err error) {
	here, err := BootID()
	if err != nil {
		return -1, st, err
	}
	if r.bootID == "" || here != r.bootID {
		return -1, st, fmt.Errorf("the image comes from another boot or host (boot id %q, here %q)", r.bootID, here)
	}
	pid := int(r.imagePid)
	if ps, err := proc.ReadStatus(pid); err != nil || ps.State != 't' || ps.TracerPid == 0 {
		if err == nil {
			err = fmt.Errorf("state %c, tracer pid %d", ps.State, ps.TracerPid)
		}
		return -1, st, fmt.Errorf("pid %d is not frozen by a tracer: %w", pid, err)
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, st, fmt.Errorf("open dumped pid %d: %w", pid, os.NewSyscallError("pidfd_open", err))
	}
	defer unix.Close(pidfd)
	if local, err = unix.PidfdGetfd(pidfd, int(fd), 0); err != nil {
		return -1, st, fmt.Errorf("take fd %d of dumped pid %d: %w", fd, pid, os.NewSyscallError("pidfd_getfd", err))
	}
	if err := unix.Fstat(local, &st); err != nil {
		unix.Close(local)
		return -1, st, fmt.Errorf("stat fd %d of pid %d: %w", fd, pid, os.NewSyscallError("fstat", err))
	}
	return local, st, nil
}
