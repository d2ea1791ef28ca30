package kabi

import "unsafe"

// CloneArgs is struct clone_args from include/uapi/linux/sched.h, the
// argument of clone3(2); pass unix.CLONE_ARGS_SIZE_VER2 (88) as its size to
// use SetTid/SetTidSize and Cgroup. SetTid points to an array of SetTidSize
// pids whose first element is the pid in the most nested PID namespace (see
// clone(2), "set_tid"). SetTid is an unsafe.Pointer into our own memory (as
// cilium/ebpf's internal/sys.Pointer), so the array is kept alive and moves
// with its pointer should the stack grow; [RemoteCloneArgs] is the same
// layout for another process's memory.
type CloneArgs struct {
	Flags      uint64
	Pidfd      uint64
	ChildTid   uint64
	ParentTid  uint64
	ExitSignal uint64
	Stack      uint64
	StackSize  uint64
	TLS        uint64
	SetTid     unsafe.Pointer // *int32 (pid_t[SetTidSize])
	SetTidSize uint64
	Cgroup     uint64
}
