package files

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// A memfd or deleted file that the process (or another member) also maps
// shared is one shared memory object, made by package restore (shm.go)
// before any fd: RestoreOptions.SharedMemory hands lazycr's fd of it, and
// its fds are opened on that object instead of a new file. The first
// restorer to ask fills it (content, mode, seals), the later ones only
// open their fds.

// SharedMemoryFunc returns lazycr's fd of the shared memory object that
// the memfd (dev 0) or deleted file with the source device and inode is
// also mapped as, or -1 if it is not mapped; first is true for the first
// call for that object. The fd stays lazycr's. A deleted file's object
// is still linked under its path while the restore runs.
type SharedMemoryFunc func(dev, inode uint64) (local int, first bool, err error)

// sharedObject opens the shared memory object of (dev, inode), if there
// is one, in the process at a temporary number: fd is that number and
// local a copy of lazycr's fd (both the caller's to close); local is -1
// when the file is not mapped shared.
func (r *restorer) sharedObject(dev, inode uint64) (fd uintptr, local int, first bool, err error) {
	if r.shared == nil {
		return 0, -1, false, nil
	}
	obj, first, err := r.shared(dev, inode)
	if err != nil || obj < 0 {
		return 0, -1, false, err
	}
	local, err = unix.FcntlInt(uintptr(obj), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return 0, -1, false, fmt.Errorf("dup the shared memory object: %w", os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err))
	}
	fd, err = r.openAt(fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), obj), unix.O_RDWR|unix.O_CLOEXEC)
	if err != nil {
		unix.Close(local)
		return 0, -1, false, fmt.Errorf("open the shared memory object in pid %d: %w", r.pid, err)
	}
	return fd, local, first, nil
}
