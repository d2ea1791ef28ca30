package kabi

import (
	"os"
	"runtime"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// BpfLinkCreateIter is the link_create member of union bpf_attr
// (include/uapi/linux/bpf.h) as BPF_LINK_CREATE reads it for an iterator
// (AttachType BPF_TRACE_ITER): IterInfo points to a union
// bpf_iter_link_info of IterInfoLen bytes. An unsafe.Pointer, not an
// integer: the kernel reads our memory through it (see PmScanArg.Vec).
type BpfLinkCreateIter struct {
	ProgFd      uint32
	TargetFd    uint32
	AttachType  uint32
	Flags       uint32
	IterInfo    unsafe.Pointer // *BpfIterLinkInfoTask
	IterInfoLen uint32
	_           uint32
}

// BpfIterLinkInfoTask is union bpf_iter_link_info with its task member
// (include/uapi/linux/bpf.h, Linux 6.1+): one of Tid (that thread only),
// Pid (every thread of the process) or PidFd selects what a task, task_file
// or task_vma iterator visits; all zero visits every task. The union is 16
// bytes (its cgroup member is the largest).
type BpfIterLinkInfoTask struct {
	Tid   uint32
	Pid   uint32
	PidFd uint32
	_     uint32
}

// BpfIterCreate is the iter_create member of union bpf_attr
// (BPF_ITER_CREATE): a new seq_file instance of the iterator link LinkFd.
type BpfIterCreate struct {
	LinkFd uint32
	Flags  uint32
}

// BpfName returns the C name of a bpf(2) command lazycr makes itself.
func BpfName(cmd int) string {
	switch cmd {
	case unix.BPF_LINK_CREATE:
		return "BPF_LINK_CREATE"
	case unix.BPF_ITER_CREATE:
		return "BPF_ITER_CREATE"
	}
	return "bpf command " + strconv.Itoa(cmd)
}

// Bpf is bpf(cmd, attr, size) returning the new fd (BPF_LINK_CREATE,
// BPF_ITER_CREATE): EINTR is retried, attr is kept alive, and
// an errno comes back as os.NewSyscallError("bpf BPF_LINK_CREATE", errno).
// The fd is O_CLOEXEC: the kernel opens every bpf fd with it (bpf(2)).
func Bpf(cmd int, attr unsafe.Pointer, size uintptr) (int, error) {
	for {
		r, _, errno := unix.Syscall(unix.SYS_BPF, uintptr(cmd), uintptr(attr), size)
		runtime.KeepAlive(attr)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return -1, os.NewSyscallError("bpf "+BpfName(cmd), errno)
		}
		return int(r), nil
	}
}

// BpfLinkIterTask is BPF_LINK_CREATE for the iterator program progFd
// (attach type BPF_TRACE_ITER) limited to thread tid; it returns the link
// fd.
func BpfLinkIterTask(progFd, tid int) (int, error) {
	info := BpfIterLinkInfoTask{Tid: uint32(tid)}
	attr := BpfLinkCreateIter{
		ProgFd:      uint32(progFd),
		AttachType:  unix.BPF_TRACE_ITER,
		IterInfo:    unsafe.Pointer(&info),
		IterInfoLen: uint32(unsafe.Sizeof(info)),
	}
	return Bpf(unix.BPF_LINK_CREATE, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
}

// BpfIterNew is BPF_ITER_CREATE: a new instance of the iterator link
// linkFd, an fd whose read(2) runs the program (its seq_file).
func BpfIterNew(linkFd int) (int, error) {
	attr := BpfIterCreate{LinkFd: uint32(linkFd)}
	return Bpf(unix.BPF_ITER_CREATE, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
}
