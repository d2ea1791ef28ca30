package inject

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sigqueueinfo wraps rt_sigqueueinfo(2): queue sig with info for the whole
// thread group pid. For another process the kernel takes info as is, as
// long as si_code is negative (SI_QUEUE here).
func sigqueueinfo(pid int, sig unix.Signal, info *[sizeofSiginfo]byte) error {
	_, _, e := unix.Syscall(unix.SYS_RT_SIGQUEUEINFO, uintptr(pid), uintptr(sig), uintptr(unsafe.Pointer(info)))
	if e != 0 {
		return os.NewSyscallError("rt_sigqueueinfo", e)
	}
	return nil
}
