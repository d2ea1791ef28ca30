package dump

import (
	"errors"
	"fmt"
	"strings"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// refuseHiddenFiles refuses a process of another mount namespace than
// lazycr's (a container, `unshare -m` with a private mount) that has a file
// open, mapped or watched which lazycr does not see at the same path: a
// file on a mount only that namespace has. Restore opens every file by
// path in lazycr's own mount namespace and checks it by device and inode
// (files/regular.go checkFdFile), so the image could never be restored
// here, and a kill-mode dump would have ended the process for nothing
// (the namespace dies with its last process, taking the mount with it).
// Seen from lazycr, such a path is missing or another file: the same
// check restore makes, made before the kill. Files of /proc (reopened
// through the restored process's own /proc/self, or checked at restore)
// and deleted files (their content is in the image) are left to the
// restore. procPid is the pid whose /proc directory shows the process
// (a live thread's when the leader has exited).
func refuseHiddenFiles(pid, procPid int, p *pb.Process, mm *pb.MemoryMap, fds *pb.FdTable) error {
	ns := p.GetNamespaces().GetMnt()
	if ns == 0 {
		return nil
	}
	mine, err := proc.SelfNs("mnt")
	if err != nil {
		return fmt.Errorf("dump pid %d: read lazycr's mount namespace: %w", pid, err)
	}
	if ns == mine.Ino {
		return nil
	}
	check := func(what string, id *pb.FileID, symlink bool) error {
		if id == nil || id.Path == "" || strings.HasPrefix(id.Path, "/proc/") || strings.HasSuffix(id.Path, " (deleted)") {
			return nil
		}
		var st unix.Stat_t
		stat := unix.Stat
		if symlink {
			stat = unix.Lstat
		}
		here := "no such file"
		if err := stat(id.Path, &st); err == nil {
			if st.Ino == id.Inode && st.Dev == id.Dev {
				return nil
			}
			here = fmt.Sprintf("inode %d on device %#x", st.Ino, st.Dev)
		} else if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR) {
			here = err.Error()
		}
		return fmt.Errorf("dump pid %d: %w: %s (%s, inode %d on device %#x) is visible only in the process's mount namespace mnt:[%d]: at that path lazycr's mnt:[%d] has %s, and restore opens files in lazycr's mount namespace",
			pid, ErrUnsupported, what, id.Path, id.Inode, id.Dev, ns, mine.Ino, here)
	}
	// The current and root directories are recorded by path only: one
	// that resolves to another directory here (a mount over a directory
	// lazycr has too) would be entered silently.
	for _, d := range []struct{ what, link, path string }{{"the current directory", "cwd", p.Cwd}, {"the root directory", "root", p.Root}} {
		if d.path == "" || strings.HasSuffix(d.path, " (deleted)") {
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/%s", procPid, d.link), &st); err != nil {
			return fmt.Errorf("dump pid %d: stat %s: %w", pid, d.what, err)
		}
		if err := check(d.what, &pb.FileID{Path: d.path, Dev: st.Dev, Inode: st.Ino}, false); err != nil {
			return err
		}
	}
	for _, f := range fds.GetFds() {
		if rf := f.GetFile(); rf != nil {
			if err := check(fmt.Sprintf("fd %d", f.Fd), rf.File, rf.Mode&unix.S_IFMT == unix.S_IFLNK); err != nil {
				return err
			}
		}
		for _, w := range f.GetInotify().GetWatches() {
			if err := check(fmt.Sprintf("inotify fd %d watch %d", f.Fd, w.Wd), w.File, false); err != nil {
				return err
			}
		}
	}
	if err := check("the executable", mm.GetExe(), false); err != nil {
		return err
	}
	for _, v := range mm.GetVmas() {
		if v.Kind != pb.VmaKind_VMA_KIND_FILE {
			continue
		}
		if err := check(fmt.Sprintf("vma %#x-%#x", v.Start, v.End), v.File, false); err != nil {
			return err
		}
	}
	return nil
}
