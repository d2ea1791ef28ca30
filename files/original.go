package files

import (
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// fdOfFrozenOriginal copies fd of the dumped process into lazycr with
// pidfd_getfd(2) (the same open file description), for a post-copy restore
// on the host it was dumped on that takes an object over instead of making
// it afresh: only if the image comes from this boot and the dumped pid is
// stopped by a tracer (the source's freeze). ok is false when any of that
// does not hold; the caller closes local and checks it is the object the
// image describes (st).
func (r *restorer) fdOfFrozenOriginal(fd int32) (local int, st unix.Stat_t, ok bool) {
	if here, err := BootID(); err != nil || r.bootID == "" || here != r.bootID {
		return -1, st, false
	}
	pid := int(r.imagePid)
	if ps, err := proc.ReadStatus(pid); err != nil || ps.State != 't' || ps.TracerPid == 0 {
		return -1, st, false
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, st, false
	}
	defer unix.Close(pidfd)
	if local, err = unix.PidfdGetfd(pidfd, int(fd), 0); err != nil {
		return -1, st, false
	}
	if err := unix.Fstat(local, &st); err != nil {
		unix.Close(local)
		return -1, st, false
	}
	return local, st, true
}
