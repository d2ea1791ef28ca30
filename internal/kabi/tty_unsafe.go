package kabi

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Terminal ioctls (tty_ioctl(4); the numbers are x/sys/unix's). A slave
// that is not the caller's controlling terminal answers TIOCGPGRP and
// TIOCGSID with ENOTTY (drivers/tty/tty_jobctrl.c tiocgpgrp, tiocgsid);
// TIOCGDEV, TCGETS2, TIOCGWINSZ, TIOCGEXCL and TIOCGETD work on any open
// terminal.

// Termios2 is struct termios2 (include/uapi/asm-generic/termbits.h), which
// TCGETS2/TCSETS2 read and write: x/sys/unix's Termios has its layout on
// amd64 (44 bytes, checked in TestSizes).
type Termios2 = unix.Termios

// TtyGetTermios reads fd's terminal settings: ioctl(fd, TCGETS2).
func TtyGetTermios(fd int) (Termios2, error) {
	var t Termios2
	err := Ioctl(fd, unix.TCGETS2, unsafe.Pointer(&t))
	return t, err
}

// TtySetTermios sets them at once: ioctl(fd, TCSETS2). From a process
// outside the terminal's foreground group this raises SIGTTOU unless the
// caller blocks or ignores it (tty_check_change).
func TtySetTermios(fd int, t *Termios2) error {
	return Ioctl(fd, unix.TCSETS2, unsafe.Pointer(t))
}

// TtyGetWinsize reads fd's window size: ioctl(fd, TIOCGWINSZ).
func TtyGetWinsize(fd int) (unix.Winsize, error) {
	var w unix.Winsize
	err := Ioctl(fd, unix.TIOCGWINSZ, unsafe.Pointer(&w))
	return w, err
}

// TtyGetDev returns the device number of the terminal behind fd (for
// /dev/tty, the real one): ioctl(fd, TIOCGDEV), new_encode_dev format,
// which unix.Major and unix.Minor decode.
func TtyGetDev(fd int) (uint64, error) {
	var d uint32
	err := Ioctl(fd, unix.TIOCGDEV, unsafe.Pointer(&d))
	return uint64(d), err
}

// TtyGetInt runs a terminal ioctl that writes an int: TIOCGEXCL,
// TIOCGETD, TIOCGPGRP, TIOCGSID.
func TtyGetInt(fd int, req uintptr) (int32, error) {
	var v int32
	err := Ioctl(fd, req, unsafe.Pointer(&v))
	return v, err
}

// TtySetPgrp makes pgid the foreground process group of fd's terminal,
// which must be the caller's controlling terminal, pgid a group of its
// session: ioctl(fd, TIOCSPGRP) (tcsetpgrp(3)).
func TtySetPgrp(fd int, pgid int32) error {
	return Ioctl(fd, unix.TIOCSPGRP, unsafe.Pointer(&pgid))
}
