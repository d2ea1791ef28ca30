package files

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// regularFile is an fd opened by a path that still names it: a regular
// file, a directory, or a symlink opened O_PATH|O_NOFOLLOW. It is reopened
// by path, checked to be the same inode, and seeked to its offset.
type regularFile struct{}

func (regularFile) name() string { return "file" }

func (regularFile) claims(l *liveFd) bool {
	switch l.st.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFDIR, unix.S_IFLNK:
		return isPath(l)
	}
	return false
}

func (regularFile) dump(_ *dumper, l *liveFd, out *pb.Fd) error {
	out.Kind = &pb.Fd_File{File: &pb.RegularFile{File: fileID(l), Pos: l.info.Pos, Mode: l.st.Mode}}
	return nil
}

func (regularFile) owns(f *pb.Fd) bool { return f.GetFile() != nil }

func (regularFile) create(r *restorer, f *pb.Fd) (uintptr, error) {
	file := f.GetFile()
	if self, ok := r.ownProcPath(file.File); ok {
		return r.openOwnProc(f, self)
	}
	if err := checkFdFile(f.Fd, file.File, file.Mode); err != nil {
		return 0, err
	}
	if fd, ok, err := r.takeLockedFile(f); err != nil || ok { // lock.go
		return fd, err
	}
	fd, err := r.openAt(file.File.Path, openFlags(f.Flags))
	if err != nil {
		return 0, fmt.Errorf("open fd %d %s: %w", f.Fd, file.File.Path, err)
	}
	if file.Pos != 0 && f.Flags&unix.O_PATH == 0 {
		if _, err := r.rem.Syscall(unix.SYS_LSEEK, fd, uintptr(file.Pos), unix.SEEK_SET); err != nil {
			return 0, fmt.Errorf("seek fd %d %s to %d: %w", f.Fd, file.File.Path, file.Pos, err)
		}
	}
	return fd, nil
}

func (regularFile) show(f *pb.Fd) string {
	k := f.GetFile()
	return fmt.Sprintf("%s pos %d", k.GetFile().GetPath(), k.Pos)
}

// oTmpfileOnly is __O_TMPFILE without O_DIRECTORY: never passed to openat
// when reopening a file by path.
const oTmpfileOnly = unix.O_TMPFILE &^ unix.O_DIRECTORY

// openFlags are the flags to reopen an fd by path with: the recorded ones
// without those that create or truncate, O_CLOEXEC (the final FD_CLOEXEC is
// set by dup3) and O_NOCTTY (a tty must not become the stub's controlling
// terminal by accident).
func openFlags(flags uint32) uintptr {
	if flags&oTmpfileOnly != 0 {
		// O_TMPFILE includes O_DIRECTORY: the file is reopened by its
		// name, not made in a directory (deletedFile).
		flags &^= unix.O_DIRECTORY
	}
	return uintptr(flags&^(unix.O_CREAT|unix.O_TRUNC|unix.O_EXCL|oTmpfileOnly)) | unix.O_CLOEXEC | unix.O_NOCTTY
}

// checkFdFile makes sure path is still the file (inode and device) the
// dump saw; a symlink opened with O_PATH|O_NOFOLLOW is checked itself.
func checkFdFile(fd int32, id *pb.FileID, mode uint32) error {
	if id == nil {
		return fmt.Errorf("fd %d: %w: no file recorded", fd, ErrFileChanged)
	}
	var st unix.Stat_t
	stat := unix.Stat
	if mode&unix.S_IFMT == unix.S_IFLNK {
		stat = unix.Lstat
	}
	if err := stat(id.Path, &st); err != nil {
		return fmt.Errorf("fd %d: %w: %s: %w", fd, ErrFileChanged, id.Path, err)
	}
	if st.Ino != id.Inode || st.Dev != id.Dev {
		return fmt.Errorf("fd %d: %w: %s is now inode %d on device %#x, the dump had inode %d on %#x",
			fd, ErrFileChanged, id.Path, st.Ino, st.Dev, id.Inode, id.Dev)
	}
	return nil
}

// ownProcPath tells whether id is a file of the process's own /proc/PID
// directory (or that directory): /proc/self/status, /proc/self/mountinfo
// or /proc/self itself held open. The restored process has a directory of
// its own there, with other inodes (and another pid after --new-pid):
// the fd is reopened through /proc/self by the process itself, not checked
// against the dumped inode, which belonged to the dead original. It
// returns the path under /proc/self. Threads' /proc/PID/task/TID files are
// not among them (their tids may change).
func (r *restorer) ownProcPath(id *pb.FileID) (string, bool) {
	if id == nil || r.imagePid == 0 {
		return "", false
	}
	rest, ok := strings.CutPrefix(id.Path, "/proc/"+strconv.Itoa(int(r.imagePid)))
	if !ok || rest != "" && rest[0] != '/' || strings.HasPrefix(rest, "/task/") {
		return "", false
	}
	var fs unix.Statfs_t
	if err := unix.Statfs("/proc/self", &fs); err != nil || fs.Type != unix.PROC_SUPER_MAGIC {
		return "", false
	}
	// The dumped file must have been on a procfs too: the device of
	// this lazycr's /proc.
	var st unix.Stat_t
	if err := unix.Stat("/proc/self", &st); err != nil || st.Dev != id.Dev {
		return "", false
	}
	return "/proc/self" + rest, true
}

// openOwnProc opens path (under /proc/self) in the process being built,
// with f's flags and offset.
func (r *restorer) openOwnProc(f *pb.Fd, path string) (uintptr, error) {
	file := f.GetFile()
	fd, err := r.openAt(path, openFlags(f.Flags))
	if err != nil {
		return 0, fmt.Errorf("open fd %d %s (%s of the process itself): %w", f.Fd, path, file.File.Path, err)
	}
	if file.Pos != 0 && f.Flags&unix.O_PATH == 0 {
		if _, err := r.rem.Syscall(unix.SYS_LSEEK, fd, uintptr(file.Pos), unix.SEEK_SET); err != nil {
			return 0, fmt.Errorf("seek fd %d %s to %d: %w", f.Fd, path, file.Pos, err)
		}
	}
	return fd, nil
}
