package files

import (
	"errors"
	"fmt"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// device is a character device opened by path (/dev/null, /dev/zero,
// /dev/urandom, a tty). It is reopened by path and checked to be the same
// major:minor.
type device struct{}

func (device) name() string { return "device" }

func (device) claims(l *liveFd) bool {
	return l.st.Mode&unix.S_IFMT == unix.S_IFCHR && isPath(l)
}

func (device) dump(_ *dumper, l *liveFd, out *pb.Fd) error {
	out.Kind = &pb.Fd_Device{Device: &pb.Device{File: fileID(l), Pos: l.info.Pos, Mode: l.st.Mode,
		RdevMajor: unix.Major(l.st.Rdev), RdevMinor: unix.Minor(l.st.Rdev)}}
	return nil
}

func (device) owns(f *pb.Fd) bool { return f.GetDevice() != nil }

func (device) create(r *restorer, f *pb.Fd) (uintptr, error) {
	dev := f.GetDevice()
	if dev.File == nil {
		return 0, fmt.Errorf("fd %d: %w: no device file recorded", f.Fd, ErrFileChanged)
	}
	path := dev.File.Path
	fd, err := r.openAt(path, openFlags(f.Flags))
	if err != nil {
		return 0, fmt.Errorf("open fd %d %s: %w", f.Fd, path, err)
	}
	// What was opened, through the process's own fd link.
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/fd/%d", r.pid, fd), &st); err != nil {
		return 0, fmt.Errorf("stat fd %d %s: %w", f.Fd, path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != dev.RdevMajor || unix.Minor(st.Rdev) != dev.RdevMinor {
		return 0, fmt.Errorf("fd %d: %w: %s is now mode %#o device %d:%d, the dump had character device %d:%d",
			f.Fd, ErrFileChanged, path, st.Mode&unix.S_IFMT, unix.Major(st.Rdev), unix.Minor(st.Rdev), dev.RdevMajor, dev.RdevMinor)
	}
	if dev.Pos != 0 {
		_, err := r.rem.Syscall(unix.SYS_LSEEK, fd, uintptr(dev.Pos), unix.SEEK_SET)
		if err != nil && !errors.Is(err, unix.ESPIPE) {
			return 0, fmt.Errorf("seek fd %d %s to %d: %w", f.Fd, path, dev.Pos, err)
		}
	}
	return fd, nil
}

func (device) show(f *pb.Fd) string {
	d := f.GetDevice()
	return fmt.Sprintf("%s (%d:%d)", d.GetFile().GetPath(), d.RdevMajor, d.RdevMinor)
}
