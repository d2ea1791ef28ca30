package dump

import (
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"strings"
	"unsafe"

	"github.com/lazycr/lazycr/cgroup"
	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/proc"
	"github.com/lazycr/lazycr/procattr"
	"golang.org/x/sys/unix"
)

// rlimitNames are the RLIMIT_* resources, in their numeric order
// (include/uapi/asm-generic/resource.h).
var rlimitNames = []string{"cpu", "fsize", "data", "stack", "core", "rss", "nproc", "nofile",
	"memlock", "as", "locks", "sigpending", "msgqueue", "nice", "rtprio", "rttime"}

func (cp *Checkpoint) collectProcess() (*pb.Process, error) {
	pid := cp.pid
	// When the leader has exited, /proc/PID still names the process (ids,
	// parent, group, session, name) but shows no memory, files, working
	// directory or umask: those come from a live thread's /proc/TID, and
	// injected syscalls run on that thread.
	pp, leader := cp.proc.ProcPid(), cp.live()
	fail := func(what string, err error) error { return fmt.Errorf("dump pid %d: %s: %w", pid, what, err) }
	idst, err := proc.ReadStatus(pid)
	if err != nil {
		return nil, fail("read status", err)
	}
	st, err := proc.ReadStatus(pp)
	if err != nil {
		return nil, fail("read status", err)
	}
	stat, err := proc.ReadStat(pid)
	if err != nil {
		return nil, fail("read stat", err)
	}
	p := &pb.Process{
		LeaderExited: cp.proc.LeaderExited(),
		Pid:          uint32(pid), NsPid: u32s(idst.NSpid), Ppid: uint32(stat.Ppid), Pgid: uint32(stat.Pgrp),
		Sid: uint32(stat.Session), Comm: stat.Comm, Umask: st.Umask, StartTime: stat.StartTime,
		Creds: &pb.Credentials{
			Uid: st.Uid[:], Gid: st.Gid[:], Groups: st.Groups,
			CapInheritable: st.CapInh, CapPermitted: st.CapPrm, CapEffective: st.CapEff,
			CapBounding: st.CapBnd, CapAmbient: st.CapAmb,
		},
	}
	if p.Cwd, err = proc.ReadCwd(pp); err != nil {
		return nil, fail("read cwd", err)
	}
	if strings.HasSuffix(p.Cwd, " (deleted)") {
		// The directory was removed while the process was in it: keep what
		// is left to see of it (restore makes one like it and removes it).
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/cwd", pp), &st); err != nil {
			return nil, fail("stat removed current directory "+p.Cwd, err)
		}
		p.CwdDeleted = &pb.DeletedDir{Mode: st.Mode & 0o7777, Uid: st.Uid, Gid: st.Gid}
	}
	if p.Root, err = proc.ReadRoot(pp); err != nil {
		return nil, fail("read root", err)
	}
	if err := cp.rootDeleted(p); err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pp)); err == nil {
		for _, a := range strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00") {
			p.Argv = append(p.Argv, a)
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid)); err == nil {
		fmt.Sscan(string(b), &p.OomScoreAdj)
	}
	// prlimit(2) on another process needs CAP_SYS_RESOURCE unless its uids
	// and gids match ours, and root here lacks it: ask the process itself
	// (an injected prlimit64 on pid 0 is always allowed).
	for res := range rlimitNames {
		var b [16]byte
		if err := cp.injectOut(leader, b[:], unix.SYS_PRLIMIT64, 0, uintptr(res), 0, outArg); err != nil {
			return nil, fail("injected prlimit64 "+rlimitNames[res], err)
		}
		p.Rlimits = append(p.Rlimits, &pb.Rlimit{Resource: int32(res), Name: rlimitNames[res],
			Cur: binary.LittleEndian.Uint64(b[0:]), Max: binary.LittleEndian.Uint64(b[8:])})
	}
	if p.Namespaces, err = readNamespaces(pp); err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	if p.Cgroups, err = cgroup.Dump(pp); err != nil {
		return nil, fail("read cgroups", err)
	}

	if p.Sigactions, err = cp.sigactions(leader, st.SigCgt|st.SigIgn); err != nil {
		return nil, err
	}
	if p.Itimers, err = cp.itimers(leader); err != nil {
		return nil, err
	}
	if p.PosixTimers, err = cp.posixTimers(leader); err != nil {
		return nil, err
	}
	shared, err := cp.proc.PendingSignals(leader, true)
	if err != nil {
		return nil, fail("read shared pending signals", err)
	}
	p.SharedPending = siginfos(shared)
	p.StopSignal = uint32(cp.proc.GroupStop()) // job-control stop (state T)
	if err := procattr.Dump(callerOn{cp, leader}, p); err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	if v, err := cp.proc.Syscall(leader, unix.SYS_PRCTL, unix.PR_GET_SECUREBITS); err == nil {
		p.Creds.Securebits = uint32(v)
	} else {
		return nil, fail("injected prctl(PR_GET_SECUREBITS)", err)
	}
	// What restore would refuse on any host is refused here, while the
	// original still runs.
	if err := procattr.AmbientRefused(p.Pid, p.Creds.CapAmbient, p.Creds.Securebits); err != nil {
		return nil, fmt.Errorf("dump pid %d: %w: %w", pid, ErrUnsupported, err)
	}

	for _, tid := range cp.proc.Threads() {
		t, err := cp.thread(tid)
		if err != nil {
			return nil, err
		}
		// Asked of the thread itself (who 0, getpriority(2)): its tid as
		// lazycr sees it means nothing inside another PID namespace.
		if err := procattr.ThreadNice(callerOn{cp, tid}, p, 0); err != nil {
			return nil, fmt.Errorf("dump pid %d: thread %d: %w: %w", pid, tid, ErrUnsupported, err)
		}
		if err := procattr.ThreadSched(callerOn{cp, tid}, p); err != nil {
			return nil, fmt.Errorf("dump pid %d: thread %d: %w: %w", pid, tid, ErrUnsupported, err)
		}
		if err := procattr.ThreadTSC(callerOn{cp, tid}, t.SeccompMode == image.SeccompModeStrict); err != nil {
			return nil, fmt.Errorf("dump pid %d: thread %d: %w: %w", pid, tid, ErrUnsupported, err)
		}
		if tid != leader {
			if err := procattr.ThreadMempolicy(callerOn{cp, tid}, p, tid); err != nil {
				return nil, fmt.Errorf("dump pid %d: %w: %w", pid, ErrUnsupported, err)
			}
		}
		p.Threads = append(p.Threads, t)
	}
	return p, nil
}

func (cp *Checkpoint) thread(tid int) (*pb.Thread, error) {
	pid := cp.pid
	fail := func(what string, err error) error {
		return fmt.Errorf("dump pid %d tid %d: %s: %w", pid, tid, what, err)
	}
	t := &pb.Thread{Tid: uint32(tid)}
	st, err := proc.ReadTaskStatus(pid, tid)
	if err != nil {
		return nil, fail("read status", err)
	}
	t.NsTid = u32s(st.NSpid)
	if err := cp.collectSeccomp(tid, t, st.Seccomp, st.SeccompFilters); err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/comm", pid, tid)); err == nil {
		t.Comm = strings.TrimSuffix(string(b), "\n")
	}
	r, err := cp.proc.Regs(tid)
	if err != nil {
		return nil, fail("read registers", err)
	}
	t.Regs = image.RegsToPB(&r)
	if t.Xsave, err = cp.proc.XState(tid); err != nil {
		return nil, fail("read xsave area", err)
	}
	if t.Sigmask, err = cp.proc.SigMask(tid); err != nil {
		return nil, fail("read signal mask", err)
	}
	pend, err := cp.proc.PendingSignals(tid, false)
	if err != nil {
		return nil, fail("read pending signals", err)
	}
	t.Pending = siginfos(pend)
	rs, err := cp.proc.Rseq(tid)
	if err != nil {
		return nil, fail("read rseq configuration", err)
	}
	t.Rseq = &pb.Rseq{Addr: uint64(rs.Pointer), Len: rs.Size, Signature: rs.Signature, Flags: rs.Flags}

	// sigaltstack(NULL, &old): stack_t is {void *ss_sp; int ss_flags; size_t ss_size}.
	var ss [24]byte
	if err := cp.injectOut(tid, ss[:], unix.SYS_SIGALTSTACK, 0, outArg); err != nil {
		return nil, fail("injected sigaltstack", err)
	}
	t.Sigaltstack = &pb.SigAltStack{
		Sp: binary.LittleEndian.Uint64(ss[0:]), Flags: int32(binary.LittleEndian.Uint32(ss[8:])),
		Size: binary.LittleEndian.Uint64(ss[16:]),
	}
	var ctid [8]byte
	if err := cp.injectOut(tid, ctid[:], unix.SYS_PRCTL, unix.PR_GET_TID_ADDRESS, outArg); err != nil {
		return nil, fail("injected prctl(PR_GET_TID_ADDRESS)", err)
	}
	t.ClearChildTid = binary.LittleEndian.Uint64(ctid[:])

	// get_robust_list(2) works on another thread given ptrace access.
	var head uintptr
	var hlen uintptr
	if _, _, e := unix.Syscall(unix.SYS_GET_ROBUST_LIST, uintptr(tid), uintptr(unsafe.Pointer(&head)), uintptr(unsafe.Pointer(&hlen))); e != 0 {
		return nil, fail("get_robust_list", os.NewSyscallError("get_robust_list", e))
	}
	t.RobustList = &pb.RobustList{Head: uint64(head), Len: uint64(hlen)}
	return t, nil
}

// outArg marks the argument of an injected syscall that points to the
// scratch page, where the kernel writes its result.
const outArg = ^uintptr(0)

// injectOut runs syscall nr on thread tid with args; an argument equal to
// outArg is replaced by the scratch page address, whose first len(out) bytes
// are zeroed before and copied into out after.
func (cp *Checkpoint) injectOut(tid int, out []byte, nr uintptr, args ...uintptr) error {
	scratch, err := cp.proc.Scratch()
	if err != nil {
		return err
	}
	if err := cp.proc.WriteMem(scratch, make([]byte, len(out))); err != nil {
		return err
	}
	a := make([]uintptr, len(args))
	for i, v := range args {
		if v == outArg {
			v = scratch
		}
		a[i] = v
	}
	if _, err := cp.proc.Syscall(tid, nr, a...); err != nil {
		return err
	}
	return cp.proc.ReadMem(scratch, out)
}

// sigactions reads every handler with injected rt_sigaction(sig, NULL,
// &old, 8); the kernel's struct sigaction is {handler, flags, restorer,
// mask}, 32 bytes (see rt_sigaction(2), "C library/kernel differences").
//
// Only signals with a handler or ignored (SigCgt|SigIgn of /proc/PID/status)
// and SIGCHLD (whose SA_NOCLDWAIT/SA_NOCLDSTOP matter even with SIG_DFL)
// are asked: every other one is SIG_DFL, whose flags have no effect. That
// saves some 60 injected syscalls of the freeze.
func (cp *Checkpoint) sigactions(tid int, nonDefault uint64) ([]*pb.SigAction, error) {
	var out []*pb.SigAction
	for sig := 1; sig <= 64; sig++ {
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
			continue
		}
		if nonDefault&(1<<(sig-1)) == 0 && sig != int(unix.SIGCHLD) {
			out = append(out, &pb.SigAction{Signo: int32(sig)})
			continue
		}
		var b [32]byte
		if err := cp.injectOut(tid, b[:], unix.SYS_RT_SIGACTION, uintptr(sig), 0, outArg, 8); err != nil {
			return nil, fmt.Errorf("dump pid %d: injected rt_sigaction(%d): %w", cp.pid, sig, err)
		}
		out = append(out, &pb.SigAction{
			Signo:    int32(sig),
			Handler:  binary.LittleEndian.Uint64(b[0:]),
			Flags:    binary.LittleEndian.Uint64(b[8:]),
			Restorer: binary.LittleEndian.Uint64(b[16:]),
			Mask:     binary.LittleEndian.Uint64(b[24:]),
		})
	}
	return out, nil
}

// itimers reads ITIMER_REAL, ITIMER_VIRTUAL and ITIMER_PROF with injected
// getitimer(2) (struct itimerval: interval then value, each a timeval).
func (cp *Checkpoint) itimers(tid int) ([]*pb.ITimer, error) {
	var out []*pb.ITimer
	for which := 0; which < 3; which++ {
		var b [32]byte
		if err := cp.injectOut(tid, b[:], unix.SYS_GETITIMER, uintptr(which), outArg); err != nil {
			return nil, fmt.Errorf("dump pid %d: injected getitimer(%d): %w", cp.pid, which, err)
		}
		tv := func(o int) int64 {
			return int64(binary.LittleEndian.Uint64(b[o:]))*1e6 + int64(binary.LittleEndian.Uint64(b[o+8:]))
		}
		out = append(out, &pb.ITimer{Which: int32(which), IntervalUs: tv(0), ValueUs: tv(16)})
	}
	return out, nil
}

// sigev_notify values (include/uapi/asm-generic/siginfo.h).
const (
	sigevSignal   = 0
	sigevNone     = 1
	sigevThread   = 2
	sigevThreadID = 4
)

// posixTimers lists timers from /proc/PID/timers and reads each one's
// setting with injected timer_gettime(2).
func (cp *Checkpoint) posixTimers(tid int) ([]*pb.PosixTimer, error) {
	timers, err := proc.ReadTimers(cp.pid)
	if err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", cp.pid, err)
	}
	var out []*pb.PosixTimer
	for _, t := range timers {
		var b [32]byte
		if err := cp.injectOut(tid, b[:], unix.SYS_TIMER_GETTIME, uintptr(t.ID), outArg); err != nil {
			return nil, fmt.Errorf("dump pid %d: injected timer_gettime(%d): %w", cp.pid, t.ID, err)
		}
		ts := func(o int) int64 {
			return int64(binary.LittleEndian.Uint64(b[o:]))*1e9 + int64(binary.LittleEndian.Uint64(b[o+8:]))
		}
		pt := &pb.PosixTimer{Id: int32(t.ID), Clockid: int32(t.ClockID), Signo: int32(t.Signal),
			SigevValue: t.SigevValue, IntervalNs: ts(0), ValueNs: ts(16)}
		switch t.Notify {
		case "signal":
			pt.Notify = sigevSignal
		case "none":
			pt.Notify = sigevNone
		case "thread":
			pt.Notify = sigevThread
		}
		if t.NotifyThreadID {
			pt.Notify |= sigevThreadID
			pt.NotifyTid = int32(t.NotifyPid)
			// The thread it signals must be one restore creates again
			// (timer_create(2): EINVAL for a thread not in the group).
			if !slices.Contains(cp.proc.Threads(), t.NotifyPid) {
				return nil, fmt.Errorf("dump pid %d: %w: POSIX timer %d signals thread %d, which has exited", cp.pid, ErrUnsupported, t.ID, t.NotifyPid)
			}
		}
		out = append(out, pt)
	}
	return out, nil
}

func readNamespaces(pid int) (*pb.Namespaces, error) {
	ino := func(name string) uint64 {
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/%s", pid, name), &st); err != nil {
			return 0
		}
		return st.Ino
	}
	ns := &pb.Namespaces{Net: ino("net"), Pid: ino("pid"), Mnt: ino("mnt"), Uts: ino("uts"),
		Ipc: ino("ipc"), User: ino("user"), Cgroup: ino("cgroup"), Time: ino("time")}
	ns.NetName = proc.NetnsName(ns.Net) // restore names it when it refuses another one
	offsets, err := timeOffsets(pid, ns.Time, ino("time_for_children"))
	if offsets != nil {
		ns.TimeOffsets = &pb.TimeOffsets{MonotonicNs: int64(offsets.Monotonic), BoottimeNs: int64(offsets.Boottime)}
	}
	return ns, err
}

// timeOffsets returns the offsets of pid's time namespace own when it is
// not lazycr's, nil when it is. A process in another time namespace reads
// CLOCK_MONOTONIC and CLOCK_BOOTTIME shifted by its offsets
// (time_namespaces(7)): restored in lazycr's, every monotonic deadline it
// holds (an absolute clock_nanosleep, a condition variable's timeout, an
// event loop's timers) would move by that much, silently; restore makes it
// a time namespace with the same offsets. The offsets are read from
// /proc/PID/timens_offsets, which shows time_for_children's: refused when
// that is not the process's own (it called unshare(CLONE_NEWTIME) and has
// not forked since: its next child would start in a namespace restore
// does not make).
func timeOffsets(pid int, own, forChildren uint64) (*proc.TimeOffsets, error) {
	if own == 0 {
		return nil, nil // no time namespaces here
	}
	if forChildren != own {
		return nil, fmt.Errorf("%w: the process unshared a time namespace (time_for_children time:[%d]) it is not in (time:[%d]); its children would start there", ErrUnsupported, forChildren, own)
	}
	if mine, err := proc.SelfNs("time"); err != nil || own == mine.Ino {
		return nil, nil // lazycr's own
	}
	o, err := proc.ReadTimeOffsets(pid)
	if err != nil {
		return nil, fmt.Errorf("read the offsets of its time namespace time:[%d]: %w", own, err)
	}
	return &o, nil
}

func siginfos(raw [][]byte) []*pb.Siginfo {
	var out []*pb.Siginfo
	for _, b := range raw {
		if len(b) < 12 {
			continue
		}
		out = append(out, &pb.Siginfo{
			Signo: int32(binary.LittleEndian.Uint32(b[0:])),
			Code:  int32(binary.LittleEndian.Uint32(b[8:])),
			Raw:   append([]byte(nil), b...),
		})
	}
	return out
}

func u32s(v []int) []uint32 {
	out := make([]uint32, len(v))
	for i, x := range v {
		out[i] = uint32(x)
	}
	return out
}

// rootDeleted records what is left of a root directory (chroot(2)) that
// was removed while the process had it: restore makes one like it, makes
// it the root and removes it (restore/state.go restoreRoot). Refused: a
// removed current directory that is another directory of the same path,
// or lies inside the removed root (it cannot be made again there).
func (cp *Checkpoint) rootDeleted(p *pb.Process) error {
	root, ok := strings.CutSuffix(p.Root, " (deleted)")
	if !ok {
		return nil
	}
	pp := cp.proc.ProcPid()
	var rst, cst unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/root", pp), &rst); err != nil {
		return fmt.Errorf("stat removed root directory %s: %w", p.Root, err)
	}
	p.RootDeleted = &pb.DeletedDir{Mode: rst.Mode & 0o7777, Uid: rst.Uid, Gid: rst.Gid}
	if p.CwdDeleted == nil {
		return nil
	}
	if err := unix.Stat(fmt.Sprintf("/proc/%d/cwd", pp), &cst); err != nil {
		return fmt.Errorf("stat removed current directory %s: %w", p.Cwd, err)
	}
	same := rst.Dev == cst.Dev && rst.Ino == cst.Ino
	switch {
	case p.Cwd == p.Root && !same:
		return fmt.Errorf("%w: the removed root directory %s and the removed current directory are two directories of one path", ErrUnsupported, root)
	case p.Cwd != p.Root && strings.HasPrefix(p.Cwd, root+"/"):
		return fmt.Errorf("%w: the removed current directory %s lies inside the removed root directory %s", ErrUnsupported, p.Cwd, root)
	}
	return nil
}
