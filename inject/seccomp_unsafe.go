package inject

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// seccompMetadata is struct seccomp_metadata (include/uapi/linux/ptrace.h).
type seccompMetadata struct {
	FilterOff uint64 // in: index of the filter, 0 = the oldest (see SeccompFilters)
	Flags     uint64 // out: SECCOMP_FILTER_FLAG_LOG if the filter logs
}

// getSeccompFilter copies the classic BPF program of filter index of tid
// into buf (8 bytes per instruction) and returns its number of
// instructions; with a nil buf it only returns that number. See ptrace(2),
// PTRACE_SECCOMP_GET_FILTER: ENOENT past the last filter, EINVAL if the
// thread is not in filter mode (measured on 6.18), EACCES if the tracer lacks
// CAP_SYS_ADMIN or is itself under seccomp.
func getSeccompFilter(tid int, index uint64, buf []byte) (int, error) {
	var ptr unsafe.Pointer
	if len(buf) > 0 {
		ptr = unsafe.Pointer(&buf[0])
	}
	n, err := ptraceData(unix.PTRACE_SECCOMP_GET_FILTER, tid, uintptr(index), ptr)
	runtime.KeepAlive(buf)
	return int(n), err
}

// getSeccompMetadata returns the flags of filter index of tid
// (PTRACE_SECCOMP_GET_METADATA, ptrace(2)).
func getSeccompMetadata(tid int, index uint64) (uint64, error) {
	md := seccompMetadata{FilterOff: index}
	_, err := ptraceData(unix.PTRACE_SECCOMP_GET_METADATA, tid, unsafe.Sizeof(md), unsafe.Pointer(&md))
	return md.Flags, err
}
