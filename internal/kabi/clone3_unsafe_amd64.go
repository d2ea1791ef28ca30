package kabi

import (
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Clone3 is the raw clone3(2) system call as the parent sees it. It is only
// safe for calls that cannot create a child sharing our memory in a state Go
// does not expect; should a child nevertheless be created, the assembly stub
// makes it exit(0) at once without touching memory. It returns the child's
// tid, or an errno wrapped as os.NewSyscallError("clone3", errno).
func Clone3(args *CloneArgs, size uintptr) (int, error) {
	r, errno := rawClone3(unsafe.Pointer(args), size)
	runtime.KeepAlive(args)
	if errno != 0 {
		return -1, os.NewSyscallError("clone3", unix.Errno(errno))
	}
	return int(r), nil
}

// rawClone3 is implemented in clone3_amd64.s.
//
//go:noescape
func rawClone3(args unsafe.Pointer, size uintptr) (r1 uintptr, errno uintptr)
