package migrate

import (
	"errors"
	"fmt"
	"os"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// removeSysvLeft removes, after a finished migration killed the original,
// the System V shm segments of its image that nobody attaches any more.
// The target made them again (they travel in the skeleton, with their
// ids and keys), so the source's are stale copies: left, they keep their
// memory here until `ipcrm`, and they hold the id and key, so migrating
// the process back to this host was refused ("the id is taken here").
// A segment is ours only if it still has the image's id and key (shmctl(2)
// IPC_STAT); one still attached (a process outside the dump attached it
// since) is left, said in a warning. The source runs in the process's IPC
// namespace (dump refuses otherwise).
func removeSysvLeft(set *image.Set, log zerolog.Logger) error {
	if set == nil || set.Tree == nil {
		return nil
	}
	var errs []error
	for _, o := range set.Tree.GetShm() {
		if o.Kind != pb.ShmKind_SHM_KIND_SYSV {
			continue
		}
		var d unix.SysvShmDesc
		if _, err := unix.SysvShmCtl(int(o.SysvId), unix.IPC_STAT, &d); err != nil {
			if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EIDRM) {
				errs = append(errs, fmt.Errorf("read System V shm segment %d: %w", o.SysvId, os.NewSyscallError("shmctl IPC_STAT", err)))
			}
			continue // gone (it was marked for destruction)
		}
		if d.Perm.Key != o.SysvKey {
			continue // another segment has the id now
		}
		if d.Nattch != 0 {
			log.Warn().Int32("id", o.SysvId).Uint64("attaches", d.Nattch).Msgf("System V shm segment %d (key %#x) of the migrated process is attached here by another process: left in place", o.SysvId, uint32(o.SysvKey))
			continue
		}
		if _, err := unix.SysvShmCtl(int(o.SysvId), unix.IPC_RMID, nil); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EIDRM) {
			errs = append(errs, fmt.Errorf("remove System V shm segment %d: %w", o.SysvId, os.NewSyscallError("shmctl IPC_RMID", err)))
			continue
		}
		log.Info().Int32("id", o.SysvId).Msgf("removed System V shm segment %d (key %#x): it lives on the target now", o.SysvId, uint32(o.SysvKey))
	}
	return errors.Join(errs...)
}
