package restore

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/inject"
	"github.com/lazycr/lazycr/internal/kabi"
	"golang.org/x/sys/unix"
)

// Kernel restart codes an interrupted syscall leaves in rax
// (include/linux/errno.h).
const (
	errRestartSys          = 512
	errRestartNoIntr       = 513
	errRestartNoHand       = 514
	errRestartRestartBlock = 516
)

// threadOrder lists the tids here, leader first (also when it is to exit
// again: a zombie leader keeps the credentials it had).
func (r *Process) threadOrder() []int {
	out := []int{}
	if r.img.LeaderExited {
		out = append(out, r.b.pid)
	}
	for _, t := range r.img.Threads {
		if tid, ok := r.tids[t.Tid]; ok {
			out = append(out, tid)
		}
	}
	return out
}

// restoreThreads creates every thread but the leader and restores each
// thread's kernel state (alternate stack, robust list, clear_child_tid,
// rseq, name).
func (r *Process) restoreThreads() error {
	threads := r.img.Threads
	if r.img.LeaderExited {
		// Every dumped thread is created; the leader here only exits
		// again at the resume (leaderExit).
		if err := r.createThreads(threads); err != nil {
			return err
		}
	} else {
		r.tids[threads[0].Tid] = r.b.pid
		if len(threads) > 1 {
			if err := r.createThreads(threads[1:]); err != nil {
				return err
			}
		}
	}
	for _, t := range threads {
		if err := r.threadState(t); err != nil {
			return err
		}
	}
	// POSIX timers come after the threads: one that signals a given
	// thread (SIGEV_THREAD_ID) names a thread that must exist
	// (timer_create(2) EINVAL otherwise).
	return r.restorePosixTimers()
}

// createThreads clones every thread but the leader from the leader, with
// its original TID unless --new-pid; each new thread stays stopped until
// Resume sets its registers.
func (r *Process) createThreads(ts []*pb.Thread) error {
	for _, t := range ts {
		want := 0
		if !r.opts.NewPID {
			want = int(t.Tid)
			if r.opts.PIDNS && len(t.NsTid) > 0 {
				want = int(t.NsTid[len(t.NsTid)-1])
			}
		}
		tid, err := r.b.p.CloneThread(r.b.pid, want)
		if err != nil {
			if errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("%w: tid %d is in use here; use --new-pid or --pidns: %v", ErrPIDTaken, want, err)
			}
			return fmt.Errorf("create thread %d: %w", t.Tid, err)
		}
		r.tids[t.Tid] = tid
	}
	return nil
}

func (r *Process) threadState(t *pb.Thread) error {
	b := r.b
	tid := r.tids[t.Tid]
	if s := t.Sigaltstack; s != nil && s.Flags&kabi.SS_DISABLE == 0 {
		flags := s.Flags &^ kabi.SS_ONSTACK // SS_ONSTACK is a state, not a setting
		addr, err := b.put(0, le(s.Sp, flags, int32(0), s.Size))
		if err != nil {
			return err
		}
		if _, err := b.callOn(tid, unix.SYS_SIGALTSTACK, addr, 0); err != nil {
			return fmt.Errorf("sigaltstack on tid %d: %w", tid, err)
		}
	}
	if l := t.RobustList; l != nil && l.Head != 0 {
		if _, err := b.callOn(tid, unix.SYS_SET_ROBUST_LIST, uintptr(l.Head), uintptr(l.Len)); err != nil {
			return fmt.Errorf("set_robust_list on tid %d: %w", tid, err)
		}
	}
	if _, err := b.callOn(tid, unix.SYS_SET_TID_ADDRESS, uintptr(t.ClearChildTid)); err != nil {
		return fmt.Errorf("set_tid_address on tid %d: %w", tid, err)
	}
	if rs := t.Rseq; rs != nil && rs.Addr != 0 {
		if _, err := b.callOn(tid, unix.SYS_RSEQ, uintptr(rs.Addr), uintptr(rs.Len), 0, uintptr(rs.Signature)); err != nil {
			return fmt.Errorf("rseq registration of %#x on tid %d: %w", rs.Addr, tid, err)
		}
	}
	if t.Comm != "" && tid != b.pid {
		if err := r.setComm(tid, t.Comm); err != nil {
			return err
		}
	}
	return nil
}

// finalRegs returns the registers a thread resumes with. A thread frozen
// inside an interrupted syscall re-executes it: the new process has no
// restart block, so leaving the restart code would make the syscall fail
// with EINTR (see DESIGN, "Interrupted syscalls").
//
// A call that failed EINTR only because of the freeze (epoll_wait and the
// few others of inject.RestartInterrupted) is made again too, unless a
// signal the thread does not block is pending for it or for the process
// (shared): that signal's handler runs and the EINTR is right.
func finalRegs(t *pb.Thread, shared []*pb.Siginfo) unix.PtraceRegs {
	regs := image.RegsFromPB(t.Regs)
	if int64(regs.Orig_rax) >= 0 {
		switch -int64(regs.Rax) {
		case errRestartRestartBlock:
			sleepRemaining(&regs)
			fallthrough
		case errRestartSys, errRestartNoIntr, errRestartNoHand:
			regs.Rax = regs.Orig_rax
			regs.Rip -= 2
		default:
			if !signalWaiting(t.Sigmask, t.Pending, shared) {
				inject.RestartInterrupted(&regs)
			}
		}
	}
	regs.Orig_rax = ^uint64(0)
	return regs
}

// signalWaiting reports whether a signal that mask does not block is in
// the thread's pending queue or the process's (SIGSTOP aside: after a
// job-control stop the call goes on).
func signalWaiting(mask uint64, queues ...[]*pb.Siginfo) bool {
	for _, q := range queues {
		for _, si := range q {
			if s := si.GetSigno(); s > 0 && s <= 64 && s != int32(unix.SIGSTOP) && mask&(1<<(s-1)) == 0 {
				return true
			}
		}
	}
	return false
}

// sleepRemaining makes a relative sleep that the dump interrupted sleep
// what was left of it, not its whole length again: the kernel's restart
// block, which holds the deadline, stays behind, but when the caller gave
// a rem pointer the kernel wrote the time remaining there as the sleep was
// interrupted (kernel/time/hrtimer.c, do_nanosleep and nanosleep_copyout;
// nanosleep(2) "rem"), and that memory is in the image. The re-executed
// call then takes rem as its request, as a caller looping on EINTR would.
// Without rem (or for poll(2) and futex(2), whose restart blocks keep the
// deadline only in the kernel) the call starts again whole.
func sleepRemaining(regs *unix.PtraceRegs) {
	switch regs.Orig_rax {
	case unix.SYS_NANOSLEEP: // nanosleep(req, rem)
		if regs.Rsi != 0 {
			regs.Rdi = regs.Rsi
		}
	case unix.SYS_CLOCK_NANOSLEEP: // clock_nanosleep(clock, flags, req, rem)
		if regs.Rsi&unix.TIMER_ABSTIME == 0 && regs.R10 != 0 {
			regs.Rdx = regs.R10
		}
	}
}

// setFinalRegisters loads every thread's registers, XSAVE area and signal
// mask, then queues its pending signals.
func (r *Process) setFinalRegisters() error {
	p := r.b.p
	for _, t := range r.img.Threads {
		tid := r.tids[t.Tid]
		if len(t.Xsave) > 0 {
			if err := p.SetXState(tid, t.Xsave); err != nil {
				return fmt.Errorf("tid %d: %w", tid, err)
			}
		}
		if err := p.SetSigMask(tid, t.Sigmask); err != nil {
			return fmt.Errorf("tid %d: %w", tid, err)
		}
	}
	if err := r.requeueSignals(); err != nil {
		return err
	}
	for _, t := range r.img.Threads {
		tid := r.tids[t.Tid]
		if err := p.SetRegs(tid, finalRegs(t, r.img.SharedPending)); err != nil {
			return fmt.Errorf("tid %d: %w", tid, err)
		}
	}
	if r.img.LeaderExited {
		return r.leaderExit()
	}
	return nil
}

// leaderExit sets the leader up to exit as its first act once detached:
// every signal blocked, rip at a `syscall` instruction of the process's own
// code, rax = SYS_exit (the thread only, exit(2)). It then stays a zombie
// while the other threads run, as the dumped leader was (a thread group
// leader is reaped only with the last thread; see exit(2) and
// clone(2) CLONE_THREAD).
func (r *Process) leaderExit() error {
	p := r.b.p
	at, err := r.syscallInsn()
	if err != nil {
		return err
	}
	regs := image.RegsFromPB(r.img.Threads[0].Regs)
	regs.Rip, regs.Rax, regs.Rdi, regs.Orig_rax = at, unix.SYS_EXIT, 0, ^uint64(0)
	if err := p.SetSigMask(r.b.pid, ^uint64(0)); err != nil {
		return fmt.Errorf("leader %d: %w", r.b.pid, err)
	}
	if err := p.SetRegs(r.b.pid, regs); err != nil {
		return fmt.Errorf("leader %d: %w", r.b.pid, err)
	}
	return nil
}

// syscallInsn finds a `syscall` instruction (0f 05) in the process's
// executable file mappings, which stay after the engine's gadget page goes.
func (r *Process) syscallInsn() (uint64, error) {
	buf := make([]byte, 64<<10)
	for _, v := range r.mm.Vmas {
		if v.Kind != pb.VmaKind_VMA_KIND_FILE || v.Prot&unix.PROT_EXEC == 0 || v.Prot&unix.PROT_READ == 0 {
			continue
		}
		for at := v.Start; at < v.End; at += uint64(len(buf)) - 1 {
			n := min(uint64(len(buf)), v.End-at)
			if err := r.b.p.ReadMem(uintptr(at), buf[:n]); err != nil {
				return 0, fmt.Errorf("look for a syscall instruction at %#x: %w", at, err)
			}
			if i := bytes.Index(buf[:n], []byte{0x0f, 0x05}); i >= 0 {
				return at + uint64(i), nil
			}
		}
	}
	return 0, fmt.Errorf("no syscall instruction in the process's code for its leader to exit with")
}

func unixKill(pid int) { _ = unix.Kill(pid, unix.SIGKILL) }
