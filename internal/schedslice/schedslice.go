// Package schedslice asks the kernel's fair scheduler (EEVDF) for a short
// time slice for the calling thread, so that the thread preempts busy
// threads as soon as it wakes: the lazy-pages handler's poll loop on the
// target and the source's answering thread use it, so that a demand
// fault's round trip does not wait behind the background push (or anything
// else) for the rest of a default slice (sysctl sched_base_slice, 0.75 ms
// and more) at each of its wake-ups.
//
// With EEVDF (Linux 6.6), a thread's virtual deadline is its eligible time
// plus its slice over its weight: a shorter slice means an earlier
// deadline, and since Linux 6.12 a waking thread with an earlier deadline
// preempts the running one ("sched/eevdf: Allow shorter slices to
// wakeup-preempt", 85e511df3cec). The slice is asked for with
// sched_setattr(2)'s sched_runtime on a SCHED_OTHER thread ("sched/eevdf:
// Use sched_attr::sched_runtime to set request/slice suggestion",
// 857b158dc5e8), which the kernel clamps to 0.1–100 ms; see
// Documentation/scheduler/sched-eevdf.rst. The thread keeps its nice value
// and CPU share: only when it runs changes, not how much.
//
// Older kernels take sched_runtime for a SCHED_OTHER thread without effect.
// The setting belongs to the OS thread: callers lock their goroutine to it
// (runtime.LockOSThread) and let the goroutine end still locked, so Go
// ends the thread rather than reuse it for other goroutines.
package schedslice

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Min is the shortest slice the kernel grants (it clamps shorter ones).
const Min = 100 * time.Microsecond

// Request asks for a slice of d for the calling thread. A thread under
// another policy than SCHED_OTHER (or SCHED_BATCH), e.g. a real-time one
// chosen by the operator, is left alone.
func Request(d time.Duration) error {
	attr, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		return fmt.Errorf("read the scheduling attributes of thread %d: %w", unix.Gettid(), os.NewSyscallError("sched_getattr", err))
	}
	if attr.Policy != unix.SCHED_NORMAL && attr.Policy != unix.SCHED_BATCH {
		return nil
	}
	set := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: attr.Policy, Nice: attr.Nice, Runtime: uint64(d.Nanoseconds())}
	if err := unix.SchedSetAttr(0, &set, 0); err != nil {
		return fmt.Errorf("set a %v scheduler slice for thread %d: %w", d, unix.Gettid(), os.NewSyscallError("sched_setattr", err))
	}
	return nil
}
