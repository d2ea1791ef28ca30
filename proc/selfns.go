package proc

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// SelfNs stats lazycr's own namespace of kind ("net", "mnt", "pid",
// "ipc"...). It reads /proc/thread-self/ns/KIND on the calling thread, held
// for the call, not /proc/self/ns/KIND: /proc/self is the thread-group
// leader's, and a goroutine that entered another namespace with the
// thread locked and ended without unlocking (the usual way to drop a
// setns'd thread) wedges the main thread there if it ran on it (the Go
// runtime parks the main thread instead of ending it), so /proc/self/ns
// would name that other namespace. An unlocked goroutine's thread is
// never such a thread (the runtime starts new threads from a clean
// template thread).
func SelfNs(kind string) (unix.Stat_t, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var st unix.Stat_t
	err := unix.Stat("/proc/thread-self/ns/"+kind, &st)
	return st, err
}
