package procattr

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// The main thread's scheduling attributes: CPU affinity
// (sched_setaffinity(2)), policy and real-time priority
// (sched_setscheduler(2)), I/O priority (ioprio_set(2)) and timer slack
// (prctl(2) PR_SET_TIMERSLACK). Each belongs to a thread and a clone
// inherits it (sched(7), ioprio_set(2) "inherited across fork",
// PR_SET_TIMERSLACK): the leader's are dumped and set before the other
// threads are made, so `taskset`, `chrt`, `ionice` on a program come back.
// They are set from lazycr (RestoreSched), which, unlike the stub, can pass
// the affinity mask in its own memory.
type schedAttr struct{}

// Kernel values (include/uapi/linux/sched.h, include/uapi/linux/ioprio.h).
const (
	schedDeadline    = 6
	schedResetOnFork = 0x40000000
	ioprioWhoProcess = 1
	ioprioClassShift = 13
	affinityBytes    = 128 // 1024 CPUs
)

func (schedAttr) dump(c Caller, p *pb.Process) error {
	s := &pb.Sched{}
	var mask [affinityBytes]byte
	if err := c.CallOut(mask[:], unix.SYS_SCHED_GETAFFINITY, 0, affinityBytes, Out); err != nil {
		return fmt.Errorf("injected sched_getaffinity: %w", err)
	}
	for i := 0; i < affinityBytes; i += 8 {
		s.Cpus = append(s.Cpus, binary.LittleEndian.Uint64(mask[i:]))
	}
	for len(s.Cpus) > 1 && s.Cpus[len(s.Cpus)-1] == 0 {
		s.Cpus = s.Cpus[:len(s.Cpus)-1]
	}
	policy, err := call(c, "sched_getscheduler(0)", unix.SYS_SCHED_GETSCHEDULER, 0)
	if err != nil {
		return err
	}
	if policy&^schedResetOnFork == schedDeadline {
		return fmt.Errorf("scheduling policy SCHED_DEADLINE: its runtime, deadline and period are not restored")
	}
	s.Policy = uint32(policy)
	var param [4]byte
	if err := c.CallOut(param[:], unix.SYS_SCHED_GETPARAM, 0, Out); err != nil {
		return fmt.Errorf("injected sched_getparam: %w", err)
	}
	s.Priority = binary.LittleEndian.Uint32(param[:])
	io, err := call(c, "ioprio_get(IOPRIO_WHO_PROCESS, 0)", unix.SYS_IOPRIO_GET, ioprioWhoProcess, 0)
	if err != nil {
		return err
	}
	s.Ioprio = uint32(io)
	slack, err := call(c, "prctl(PR_GET_TIMERSLACK)", unix.SYS_PRCTL, unix.PR_GET_TIMERSLACK)
	if err != nil {
		return err
	}
	s.TimerSlackNs = uint64(slack)
	p.Sched = s
	return nil
}

// restore does nothing: RestoreSched sets them from lazycr.
func (schedAttr) restore(Caller, *pb.Process) error { return nil }

func (schedAttr) show(p *pb.Process) string {
	s := p.Sched
	if s == nil {
		return ""
	}
	var out []string
	if s.Policy != unix.SCHED_NORMAL {
		out = append(out, fmt.Sprintf("scheduling policy %d priority %d", s.Policy, s.Priority))
	}
	if s.Ioprio != 0 {
		out = append(out, fmt.Sprintf("I/O priority class %d level %d", s.Ioprio>>ioprioClassShift, s.Ioprio&(1<<ioprioClassShift-1)))
	}
	// The affinity only when it differs from this lazycr's own (all the
	// CPUs, usually).
	var own unix.CPUSet
	err := unix.SchedGetaffinity(0, &own)
	var words []uint64
	for _, w := range own {
		words = append(words, uint64(w))
	}
	if err != nil || cpuList(s.Cpus) != cpuList(words) {
		out = append(out, "CPUs "+cpuList(s.Cpus))
	}
	return strings.Join(out, ", ")
}

// cpuList writes a mask as a list of CPUs ("0-3,6").
func cpuList(words []uint64) string {
	var out []string
	n := len(words) * 64
	for i := 0; i < n; i++ {
		if words[i/64]&(1<<(i%64)) == 0 {
			continue
		}
		j := i
		for j+1 < n && words[(j+1)/64]&(1<<((j+1)%64)) != 0 {
			j++
		}
		if j == i {
			out = append(out, strconv.Itoa(i))
		} else {
			out = append(out, fmt.Sprintf("%d-%d", i, j))
		}
		i = j
	}
	return strings.Join(out, ",")
}

// RestoreSched gives thread tid (lazycr's view, the main thread of the
// process being built, before its other threads are made) the scheduling
// attributes of p, if the image has them. An affinity with no CPU of this
// host is refused, naming it (sched_setaffinity(2) EINVAL); the kernel
// keeps the CPUs of a mask that this host has.
func RestoreSched(tid int, p *pb.Process) error {
	s := p.Sched
	if s == nil {
		return nil
	}
	var set unix.CPUSet
	for i, w := range s.Cpus {
		for b := 0; b < 64; b++ {
			if w&(1<<b) != 0 {
				cpu := i*64 + b
				if cpu >= len(set)*64 {
					return fmt.Errorf("CPU affinity %s: CPU %d is beyond the %d this build handles", cpuList(s.Cpus), cpu, len(set)*64)
				}
				set.Set(cpu)
			}
		}
	}
	if err := unix.SchedSetaffinity(tid, &set); err != nil {
		if errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("set CPU affinity %s of tid %d: no CPU of it can run the process here: %w", cpuList(s.Cpus), tid, os.NewSyscallError("sched_setaffinity", err))
		}
		return fmt.Errorf("set CPU affinity %s of tid %d: %w", cpuList(s.Cpus), tid, os.NewSyscallError("sched_setaffinity", err))
	}
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: s.Policy &^ schedResetOnFork, Priority: s.Priority}
	if s.Policy&schedResetOnFork != 0 {
		attr.Flags = unix.SCHED_FLAG_RESET_ON_FORK
	}
	if p.Nice != nil {
		attr.Nice = *p.Nice // sched_setattr sets the nice value of normal policies too
	}
	if err := unix.SchedSetAttr(tid, &attr, 0); err != nil {
		return fmt.Errorf("set scheduling policy %d priority %d of tid %d: %w", attr.Policy, s.Priority, tid, os.NewSyscallError("sched_setattr", err))
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOPRIO_SET, ioprioWhoProcess, uintptr(tid), uintptr(s.Ioprio)); errno != 0 {
		return fmt.Errorf("set I/O priority %#x of tid %d: %w", s.Ioprio, tid, os.NewSyscallError("ioprio_set", errno))
	}
	if s.TimerSlackNs != 0 {
		// /proc/PID/timerslack_ns sets another thread's slack (proc(5)).
		path := fmt.Sprintf("/proc/%d/timerslack_ns", tid)
		if err := os.WriteFile(path, []byte(strconv.FormatUint(s.TimerSlackNs, 10)), 0); err != nil {
			return fmt.Errorf("set timer slack %d ns of tid %d: %w", s.TimerSlackNs, tid, err)
		}
	}
	return nil
}
