package kabi

import (
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// kcmp(2) types, include/uapi/linux/kcmp.h.
const (
	KCMP_FILE      = 0
	KCMP_VM        = 1
	KCMP_FILES     = 2
	KCMP_FS        = 3
	KCMP_EPOLL_TFD = 7
)

// Kcmp wraps kcmp(pid1, pid2, typ, 0, 0) for the types that compare a
// whole resource of the two processes (KCMP_VM, KCMP_FILES, KCMP_FS): it
// reports whether they share it. See kcmp(2).
func Kcmp(pid1, pid2, typ int) (bool, error) {
	r, _, errno := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), uintptr(typ), 0, 0, 0)
	if errno != 0 {
		return false, os.NewSyscallError("kcmp", errno)
	}
	return r == 0, nil
}

// KcmpEpollSlot is struct kcmp_epoll_slot (include/uapi/linux/kcmp.h): the
// target registered in epoll fd Efd under fd number Tfd; Toff picks among
// several targets registered under the same number (their order in
// /proc/PID/fdinfo/Efd).
type KcmpEpollSlot struct {
	Efd  uint32
	Tfd  uint32
	Toff uint32
}

// KcmpEpollTfd wraps kcmp(pid1, pid2, KCMP_EPOLL_TFD, fd, slot): it
// reports whether fd of pid1 refers to the file that slot of pid2's epoll
// instance watches. An absent slot is ENOENT. See kcmp(2).
func KcmpEpollTfd(pid1, pid2, fd int, slot *KcmpEpollSlot) (bool, error) {
	r, _, errno := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), KCMP_EPOLL_TFD, uintptr(fd), uintptr(unsafe.Pointer(slot)), 0)
	runtime.KeepAlive(slot)
	if errno != 0 {
		return false, os.NewSyscallError("kcmp KCMP_EPOLL_TFD", errno)
	}
	return r == 0, nil
}

// KcmpFile wraps kcmp(pid1, pid2, KCMP_FILE, fd1, fd2): it reports whether
// the two fds share one open file description (dup(2), fork(2)). See
// kcmp(2).
func KcmpFile(pid1, pid2, fd1, fd2 int) (bool, error) {
	r, _, errno := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), KCMP_FILE, uintptr(fd1), uintptr(fd2), 0)
	if errno != 0 {
		return false, os.NewSyscallError("kcmp KCMP_FILE", errno)
	}
	return r == 0, nil
}
