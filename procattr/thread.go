package procattr

import (
	"encoding/binary"
	"fmt"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// ThreadSched checks that the thread c runs on has the scheduling
// attributes of the leader recorded in p (affinity, policy and priority,
// I/O priority, timer slack): threads are restored as clones of the leader
// and inherit its values, so one a thread set for itself (a pinned worker,
// a SCHED_IDLE or real-time thread, `taskset -p` on a tid) would silently
// come back as the leader's. Refused, as a thread's own nice value is.
func ThreadSched(c Caller, p *pb.Process) error {
	if p.Sched == nil {
		return nil
	}
	var t pb.Process
	if err := (schedAttr{}).dump(c, &t); err != nil {
		return err
	}
	a, b := p.Sched, t.Sched
	switch {
	case cpuList(a.Cpus) != cpuList(b.Cpus):
		return fmt.Errorf("its CPU affinity %s differs from the main thread's %s: per-thread affinities are not restored", cpuList(b.Cpus), cpuList(a.Cpus))
	case a.Policy != b.Policy || a.Priority != b.Priority:
		return fmt.Errorf("its scheduling policy %d priority %d differ from the main thread's %d priority %d: per-thread policies are not restored", b.Policy, b.Priority, a.Policy, a.Priority)
	case a.Ioprio != b.Ioprio:
		return fmt.Errorf("its I/O priority %#x differs from the main thread's %#x: per-thread I/O priorities are not restored", b.Ioprio, a.Ioprio)
	case a.TimerSlackNs != b.TimerSlackNs:
		return fmt.Errorf("its timer slack %d ns differs from the main thread's %d ns: per-thread timer slacks are not restored", b.TimerSlackNs, a.TimerSlackNs)
	}
	return nil
}

// x86 arch_prctl(2) codes (arch/x86/include/uapi/asm/prctl.h).
const (
	archGetCPUID = 0x1011
)

// ThreadTSC refuses a thread for which rdtsc or cpuid fault: prctl(2)
// PR_SET_TSC PR_TSC_SIGSEGV, arch_prctl(2) ARCH_SET_CPUID 0 (a sandbox, a
// record/replay tool such as rr). Both are a thread's own and restore sets
// neither, so the restored thread would read the time stamp counter and
// the CPU's identity where it asked to be stopped. Strict seccomp mode
// makes rdtsc fault too (kernel/seccomp.c, seccomp_assign_mode: TIF_NOTSC),
// and restore sets strict mode again: such a thread's rdtsc is not
// refused.
func ThreadTSC(c Caller, strictSeccomp bool) error {
	var tsc [4]byte
	if err := c.CallOut(tsc[:], unix.SYS_PRCTL, unix.PR_GET_TSC, Out); err != nil {
		return fmt.Errorf("injected prctl(PR_GET_TSC): %w", err)
	}
	if v := binary.LittleEndian.Uint32(tsc[:]); v != unix.PR_TSC_ENABLE && !strictSeccomp {
		return fmt.Errorf("rdtsc faults for it (prctl PR_SET_TSC %d), which restore does not set again", v)
	}
	// ARCH_GET_CPUID returns 1 while cpuid runs (also where the CPU
	// cannot fault it), 0 while it faults.
	v, err := call(c, "arch_prctl(ARCH_GET_CPUID)", unix.SYS_ARCH_PRCTL, archGetCPUID, 0)
	if err != nil {
		return err
	}
	if v == 0 {
		return fmt.Errorf("cpuid faults for it (arch_prctl ARCH_SET_CPUID 0), which restore does not set again")
	}
	return nil
}
