package dump

import (
	"errors"
	"fmt"
	"slices"

	"github.com/lazycr/lazycr/internal/kabi"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// refuseSemUndo refuses a process (or member of the tree) that was the
// last to operate on a System V semaphore of lazycr's IPC namespace.
//
// A semop(2) with SEM_UNDO records an adjustment in the caller's undo list,
// which the kernel applies when the process exits (semop(2), "SEM_UNDO";
// exit_sem in ipc/sem.c). The kernel offers no way to read another
// process's undo list, so a dump cannot record it: the kill that ends a
// dump (or a lazy migration, at DONE) would apply it, releasing a
// semaphore the restored process still believes it holds (a SysV mutex,
// as Apache's accept mutex, comes back unlocked, and its next release
// makes it 2). semctl(GETPID) names the last process that operated on
// each semaphore, which is the holder of such a mutex while it holds it;
// a process that did so is refused rather than approximated.
//
// Only the sets of lazycr's IPC namespace can be seen from here; a
// process of another IPC namespace is not checked.
func (cp *Checkpoint) refuseSemUndo(pids map[int]bool) error {
	if theirs, err := proc.NamespaceInode(cp.pid, "ipc"); err == nil {
		if mine, err := proc.SelfNs("ipc"); err == nil && theirs != mine.Ino {
			return nil
		}
	}
	maxIdx, err := kabi.SemMaxIndex()
	if err != nil {
		return fmt.Errorf("dump pid %d: list System V semaphore sets: %w", cp.pid, err)
	}
	for i := 0; i <= maxIdx; i++ {
		var ds kabi.SemidDs
		id, err := kabi.SemStatAny(i, &ds)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EIDRM) {
			continue // a free index, or removed since
		}
		if err != nil {
			return fmt.Errorf("dump pid %d: read System V semaphore set at index %d: %w", cp.pid, i, err)
		}
		if ds.Otime == 0 {
			continue // nobody operated on it
		}
		for num := 0; num < int(ds.Nsems); num++ {
			last, err := kabi.SemGetPid(id, num)
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EIDRM) {
				break
			}
			if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
				// lazycr may not read the set (an unprivileged dump).
				// An undo adjustment needs alter permission (semop(2)):
				// a set none of the processes could alter holds none
				// of theirs; one they could is refused, unread.
				could, cerr := couldAlter(pids, &ds.Perm)
				if cerr != nil {
					return fmt.Errorf("dump pid %d: read System V semaphore set %d: %w", cp.pid, id, cerr)
				}
				if !could {
					break
				}
				return fmt.Errorf("dump pid %d: %w: System V semaphore set %d (key %#x) cannot be read by lazycr (%w) and the process could have operated on it: an undo (SEM_UNDO) adjustment it may hold cannot be checked", cp.pid, ErrUnsupported, id, uint32(ds.Perm.Key), err)
			}
			if err != nil {
				return fmt.Errorf("dump pid %d: read System V semaphore %d of set %d: %w", cp.pid, num, id, err)
			}
			if pids[last] {
				return fmt.Errorf("dump pid %d: %w: pid %d was the last to operate on System V semaphore %d of set %d (key %#x): an undo (SEM_UNDO) adjustment it may hold cannot be read, and its kill would apply it, releasing what the restored process would still hold", cp.pid, ErrUnsupported, last, num, id, uint32(ds.Perm.Key))
			}
		}
	}
	return nil
}

// couldAlter reports whether any of pids may alter a System V IPC object
// with permissions perm: ipcperms() in ipc/util.c picks the owner bits for
// the owner or creator uid, else the group bits for the owner or creator
// group, else the others' bits, and CAP_IPC_OWNER passes every check.
func couldAlter(pids map[int]bool, perm *unix.SysvIpcPerm) (bool, error) {
	const capIPCOwner = 15 // CAP_IPC_OWNER, include/uapi/linux/capability.h
	for pid := range pids {
		st, err := proc.ReadStatus(pid)
		if err != nil {
			return false, fmt.Errorf("read credentials of pid %d: %w", pid, err)
		}
		if st.CapEff&(1<<capIPCOwner) != 0 {
			return true, nil
		}
		euid, egid := st.Uid[1], st.Gid[1]
		mode := perm.Mode
		switch {
		case euid == perm.Uid || euid == perm.Cuid:
			mode >>= 6
		case egid == perm.Gid || egid == perm.Cgid || slices.Contains(st.Groups, perm.Gid) || slices.Contains(st.Groups, perm.Cgid):
			mode >>= 3
		}
		if mode&0o2 != 0 {
			return true, nil
		}
	}
	return false, nil
}
