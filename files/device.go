package files

import (
	"errors"
	"fmt"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// device is a character device opened by path (/dev/null, /dev/zero,
// /dev/urandom; terminals are tty.go's). It is reopened by path and checked to be the same
// major:minor.
type device struct{}

func (device) name() string { return "device" }

func (device) claims(l *liveFd) bool {
	return l.st.Mode&unix.S_IFMT == unix.S_IFCHR && isPath(l)
}

// cloningDevice names the character devices whose every open makes a new
// object (or that depend on the opener), so reopening one by path would
// not give the process what it had; "" for the others. See
// Documentation/admin-guide/devices.txt.
func cloningDevice(major, minor uint32) string {
	switch {
	case major == 2:
		return "a BSD pseudo-terminal master"
	case major == 1 && minor == 11:
		return "/dev/kmsg (each open has its own read position in the log)"
	case major == 10 && minor == 200:
		return "/dev/net/tun (each open is a new, unattached queue)"
	case major == 10 && minor == 229:
		return "/dev/fuse (each open is a new connection)"
	case major == 10 && minor == 126:
		return "/dev/userfaultfd"
	}
	return ""
}

func (device) dump(_ *dumper, l *liveFd, out *pb.Fd) error {
	maj, min := unix.Major(l.st.Rdev), unix.Minor(l.st.Rdev)
	if what := cloningDevice(maj, min); what != "" {
		return fmt.Errorf("%w: character device %s (%d:%d) is %s", ErrUnsupported, l.target, maj, min, what)
	}
	dev := &pb.Device{File: fileID(l), Pos: l.info.Pos, Mode: l.st.Mode, RdevMajor: maj, RdevMinor: min}
	out.Kind = &pb.Fd_Device{Device: dev}
	return nil
}

// isPtySlave: UNIX98 pseudo-terminal slaves have majors 136-143
// (Documentation/admin-guide/devices.txt). Their numbers are reused: a
// /dev/pts/N on another host, or after the pty was closed, is someone
// else's terminal (tty.go checks it is the same pty).
func isPtySlave(major uint32) bool { return major >= 136 && major <= 143 }

func (device) owns(f *pb.Fd) bool { return f.GetDevice() != nil }

func (device) create(r *restorer, f *pb.Fd) (uintptr, error) {
	dev := f.GetDevice()
	if dev.File == nil {
		return 0, fmt.Errorf("fd %d: %w: no device file recorded", f.Fd, ErrFileChanged)
	}
	path := dev.File.Path
	if isPtySlave(dev.RdevMajor) {
		// An image of a lazycr that recorded terminals as devices.
		if err := r.checkPty(f.Fd, path, dev.CtimeNs, false); err != nil {
			return 0, err
		}
	}
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
