package kabi

import (
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxSockFilter is BPF_MAXINSNS (include/uapi/linux/bpf_common.h): the
// longest classic filter a socket can hold.
const maxSockFilter = 4096

// GetsockoptFilter reads the classic BPF filter attached to socket fd with
// getsockopt(SOL_SOCKET, SO_GET_FILTER): optlen counts instructions, not
// bytes, and 0 asks for the count (sk_get_filter in net/core/filter.c). No
// filter, or an eBPF one (SO_ATTACH_BPF: not readable this way), gives nil.
func GetsockoptFilter(fd int) ([]unix.SockFilter, error) {
	n := uint32(0)
	if err := getsockopt(fd, unix.SO_GET_FILTER, nil, &n); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, nil
	}
	if n > maxSockFilter {
		return nil, os.NewSyscallError("getsockopt SO_GET_FILTER", unix.E2BIG)
	}
	buf := make([]unix.SockFilter, n)
	got := n
	if err := getsockopt(fd, unix.SO_GET_FILTER, unsafe.Pointer(&buf[0]), &got); err != nil {
		return nil, err
	}
	return buf[:min(got, n)], nil
}

func getsockopt(fd, opt int, val unsafe.Pointer, n *uint32) error {
	for {
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, uintptr(opt), uintptr(val), uintptr(unsafe.Pointer(n)), 0)
		runtime.KeepAlive(val)
		runtime.KeepAlive(n)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return os.NewSyscallError("getsockopt SO_GET_FILTER", errno)
		}
		return nil
	}
}
