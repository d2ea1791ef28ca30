package restore

import (
	"errors"
	"fmt"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
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

// threadOrder lists the tids here, leader first.
func (r *Process) threadOrder() []int {
	out := []int{}
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
	r.tids[threads[0].Tid] = r.b.pid
	if len(threads) > 1 {
		if err := r.createThreads(threads[1:]); err != nil {
			return err
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
func finalRegs(t *pb.Thread) unix.PtraceRegs {
	regs := image.RegsFromPB(t.Regs)
	if int64(regs.Orig_rax) >= 0 {
		switch -int64(regs.Rax) {
		case errRestartSys, errRestartNoIntr, errRestartNoHand, errRestartRestartBlock:
			regs.Rax = regs.Orig_rax
			regs.Rip -= 2
		}
	}
	regs.Orig_rax = ^uint64(0)
	return regs
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
		if err := p.SetRegs(tid, finalRegs(t)); err != nil {
			return fmt.Errorf("tid %d: %w", tid, err)
		}
	}
	return nil
}

func unixKill(pid int) { _ = unix.Kill(pid, unix.SIGKILL) }
