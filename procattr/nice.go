package procattr

import (
	"fmt"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// The nice value (setpriority(2), sched(7)). It belongs to a thread
// (PRIO_PROCESS with who 0 is the calling thread) and a clone inherits
// it: the leader's is dumped and restored before the other threads are
// made; [ThreadNice] checks that the others had the same. The raw
// getpriority syscall returns 20 - nice, never negative (getpriority(2),
// "C library/kernel differences"). Restore runs as root, before the
// credentials are dropped: a nice below the stub's needs CAP_SYS_NICE (or
// RLIMIT_NICE), which lazycr's credentials give. It is set even when 0:
// the stub has lazycr's own nice value, which may differ.
type niceAttr struct{}

// getNice reads the nice value of thread tid (0: the calling thread).
func getNice(c Caller, tid int) (int32, error) {
	v, err := call(c, fmt.Sprintf("getpriority(PRIO_PROCESS, %d)", tid), unix.SYS_GETPRIORITY, unix.PRIO_PROCESS, uintptr(tid))
	if err != nil {
		return 0, err
	}
	if v < 1 || v > 40 {
		return 0, fmt.Errorf("injected getpriority(PRIO_PROCESS, %d): %d is not 20 - nice", tid, v)
	}
	return 20 - int32(v), nil
}

func (niceAttr) dump(c Caller, p *pb.Process) error {
	n, err := getNice(c, 0)
	if err != nil {
		return err
	}
	p.Nice = &n
	return nil
}

func (niceAttr) restore(c Caller, p *pb.Process) error {
	if p.Nice == nil {
		return nil
	}
	n := *p.Nice
	if n < -20 || n > 19 {
		return fmt.Errorf("nice value %d in the image is out of range -20..19", n)
	}
	_, err := call(c, fmt.Sprintf("setpriority(PRIO_PROCESS, 0, %d)", n), unix.SYS_SETPRIORITY, unix.PRIO_PROCESS, 0, uintptr(n))
	return err
}

func (niceAttr) show(p *pb.Process) string {
	if p.GetNice() == 0 {
		return ""
	}
	return fmt.Sprintf("nice %d", p.GetNice())
}

// ThreadNice reads the nice value of thread tid of the process (by a
// syscall run in any of its threads) and refuses one that differs from
// the leader's recorded in p: threads are restored as clones of the
// leader and inherit its value.
func ThreadNice(c Caller, p *pb.Process, tid int) error {
	if p.Nice == nil {
		return nil
	}
	n, err := getNice(c, tid)
	if err != nil {
		return err
	}
	if n != *p.Nice && tid == 0 {
		return fmt.Errorf("its nice value %d differs from the main thread's %d: per-thread nice values are not restored", n, *p.Nice)
	}
	if n != *p.Nice {
		return fmt.Errorf("thread %d has nice value %d, the main thread %d: per-thread nice values are not restored", tid, n, *p.Nice)
	}
	return nil
}
