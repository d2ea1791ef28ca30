package kabi

import (
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// GetsockoptBytes wraps getsockopt(2) for options whose value is a struct
// or a buffer: it fills buf and returns the length the kernel reported
// (which may be less than len(buf), or, for SO_GET_FILTER with an empty
// buffer, a count). EINTR is retried.
func GetsockoptBytes(fd, level, opt int, buf []byte) (int, error) {
	n := uint32(len(buf))
	var p unsafe.Pointer
	if len(buf) > 0 {
		p = unsafe.Pointer(&buf[0])
	}
	for {
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(p), uintptr(unsafe.Pointer(&n)), 0)
		runtime.KeepAlive(buf)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, os.NewSyscallError("getsockopt", errno)
		}
		return int(n), nil
	}
}

// SetsockoptBytes wraps setsockopt(2) for options whose value is a struct
// or an array of structs. EINTR is retried.
func SetsockoptBytes(fd, level, opt int, buf []byte) error {
	var p unsafe.Pointer
	if len(buf) > 0 {
		p = unsafe.Pointer(&buf[0])
	}
	for {
		_, _, errno := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(p), uintptr(len(buf)), 0)
		runtime.KeepAlive(buf)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return os.NewSyscallError("setsockopt", errno)
		}
		return nil
	}
}
