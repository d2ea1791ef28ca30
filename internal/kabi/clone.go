package kabi

// RemoteCloneArgs is struct clone_args from include/uapi/linux/sched.h as
// it is written into another process's memory for an injected clone3(2):
// SetTid is an address in that process, so an integer. For a clone3 made by
// this process use [CloneArgs], whose SetTid is a pointer.
type RemoteCloneArgs struct {
	Flags      uint64
	Pidfd      uint64
	ChildTid   uint64
	ParentTid  uint64
	ExitSignal uint64
	Stack      uint64
	StackSize  uint64
	TLS        uint64
	SetTid     uint64
	SetTidSize uint64
	Cgroup     uint64
}
