package inject

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Release puts the process back exactly as it was frozen and detaches from
// it: signals suppressed during the freeze are queued again inside the
// process with their siginfo (an injected rt_tgsigqueueinfo(2) on the thread
// that was to take them, the thread's mask blocking everything meanwhile),
// the scratch page is unmapped, and each thread that ran injected code is
// brought back to a PTRACE_EVENT_STOP (PTRACE_INTERRUPT, PTRACE_CONT) where
// its saved registers and signal mask are set before PTRACE_DETACH. Leaving
// from that stop lets the kernel itself restart an interrupted syscall (or
// deliver the re-queued signals, with the usual SA_RESTART rules), exactly as
// it would have without the freeze.
//
// A guard SIGSTOP ([Process.Guard]) is taken back first: the process never
// sees it.
func (p *Process) Release() error {
	return p.t.Do(func() error { return p.letGo(false, false) })
}

// Detach is Release, except that each thread is left with the registers set
// by [Process.SetRegs] (restore's last step). In a spawned process the
// scratch mapping is unmapped by the last injected syscall, the registers are
// set at its syscall-exit stop and the thread detached from there: the kernel
// applies no syscall restart, the caller's registers are final.
func (p *Process) Detach() error {
	return p.t.Do(func() error { return p.letGo(true, false) })
}

// letGo detaches every thread; with keepStopped (DetachStopped) the guard
// SIGSTOP is left pending, otherwise it is taken back.
func (p *Process) letGo(final, keepStopped bool) error {
	if p.done {
		return fmt.Errorf("pid %d: %w", p.Pid, ErrReleased)
	}
	defer p.closeMem()
	var errs []error
	for _, th := range p.threads {
		if err := p.ensureSettled(th); err != nil {
			errs = append(errs, err)
		}
	}
	p.prune()
	p.keepStop = keepStopped

	// From here on every thread has every signal blocked until it is
	// detached (its own mask is put back just before): a signal that
	// arrives meanwhile, or was queued again below, stays pending instead
	// of being taken by one of the injected syscalls that follow (the
	// guard's getpid, the requeue, the scratch munmap) and then dropped,
	// since nothing would queue it again after them. SIGSTOP and SIGKILL
	// cannot be blocked: the guard is still taken back.
	masks := map[*thread]uint64{}
	if !p.spawned {
		for _, th := range p.threads {
			if th.gone {
				continue
			}
			m, err := getSigMask(th.tid)
			if err != nil {
				errs = append(errs, fmt.Errorf("read signal mask of pid %d tid %d: %w", p.Pid, th.tid, err))
				continue
			}
			if err := setSigMask(th.tid, ^uint64(0)); err != nil {
				errs = append(errs, fmt.Errorf("block signals of pid %d tid %d: %w", p.Pid, th.tid, err))
				continue
			}
			masks[th] = m
		}
	}
	if !keepStopped && !p.spawned {
		if err := p.unguard(); err != nil {
			errs = append(errs, err)
		}
	}

	// Queue suppressed signals again, inside the process, while every signal
	// is blocked (so none is taken before the thread is detached).
	stopAfter := false
	if !p.spawned {
		for _, th := range p.threads {
			if len(th.queued) == 0 || th.gone {
				continue
			}
			if _, ok := masks[th]; !ok {
				continue // its mask could not be blocked: reported above
			}
			stop, err := p.requeue(th)
			stopAfter = stopAfter || stop
			errs = append(errs, err)
		}
	}

	if p.scratch != 0 {
		if th, err := p.anyThread(); err == nil {
			if _, err := p.inject(th, unix.SYS_MUNMAP, p.scratch, p.scratchLen); err != nil {
				errs = append(errs, fmt.Errorf("unmap scratch at %#x: %w", p.scratch, err))
			}
		}
		p.scratch, p.scratchLen = 0, 0
	}
	if keepStopped {
		// Pending before the first thread is detached: none may run. Sent
		// again even if it looks pending: a SIGCONT may have discarded it
		// (a second SIGSTOP merges with a pending one).
		if err := p.sendGuard(); err != nil {
			return errors.Join(append(errs, err)...) // still traced: the caller may kill it
		}
	}

	stopping := p.spawned && p.stopOnDetach
	for _, th := range p.threads {
		if th.gone {
			continue
		}
		regs := th.saved
		if final {
			regs = th.final
		} else if m, ok := masks[th]; ok && !p.spawned && !p.signalsWaiting(th, m) {
			RestartInterrupted(&regs) // eintr.go
		}
		if p.spawned {
			if err := setRegs(th.tid, &regs); err != nil {
				errs = append(errs, fmt.Errorf("set registers of pid %d tid %d: %w", p.Pid, th.tid, err))
			}
			if stopping {
				// The first thread starts the group-stop before any is
				// detached (groupstop.go).
				stopping = false
				if err := p.enterGroupStop(th); err != nil {
					errs = append(errs, err)
				}
			}
			if err := ptrace(unix.PTRACE_DETACH, th.tid, 0, 0); err != nil {
				errs = append(errs, fmt.Errorf("detach pid %d tid %d: %w", p.Pid, th.tid, err))
			}
			for _, info := range th.queued { // siginfo cannot be kept for a stub
				_ = unix.Tgkill(p.Pid, th.tid, unix.Signal(siginfoSigno(info)))
			}
			continue
		}
		sig := 0
		wasParked := th.parked
		if !th.parked {
			var err error
			if sig, err = p.park(th); err != nil {
				errs = append(errs, err)
				continue
			}
			if th.gone {
				continue
			}
		}
		if m, ok := masks[th]; ok {
			if err := setSigMask(th.tid, m); err != nil {
				errs = append(errs, fmt.Errorf("restore signal mask of pid %d tid %d: %w", p.Pid, th.tid, err))
			}
		}
		if !wasParked || regs != th.saved {
			if err := setRegs(th.tid, &regs); err != nil {
				errs = append(errs, fmt.Errorf("set registers of pid %d tid %d: %w", p.Pid, th.tid, err))
			}
		}
		if err := ptrace(unix.PTRACE_DETACH, th.tid, 0, uintptr(sig)); err != nil {
			errs = append(errs, fmt.Errorf("detach pid %d tid %d: %w", p.Pid, th.tid, err))
		}
	}
	p.markDone()
	if stopAfter {
		// SIGSTOP cannot be blocked, so it was not queued inside; it carries
		// no siginfo anyone can see.
		if err := unix.Kill(p.Pid, unix.SIGSTOP); err != nil {
			errs = append(errs, fmt.Errorf("stop pid %d again: %w", p.Pid, err))
		}
	}
	return errors.Join(errs...)
}

// requeue queues th's suppressed signals again with injected
// rt_tgsigqueueinfo calls (allowed with any si_code because the caller is
// the target thread itself). It reports whether a SIGSTOP was among them.
func (p *Process) requeue(th *thread) (bool, error) {
	addr, err := p.scratchAddr()
	if err != nil {
		return false, err
	}
	stop := false
	for len(th.queued) > 0 {
		info := th.queued[0]
		th.queued = th.queued[1:]
		sig := siginfoSigno(info)
		if unix.Signal(sig) == unix.SIGSTOP {
			stop = true
			continue
		}
		if err := p.writeMem(addr, info); err != nil {
			return stop, err
		}
		if _, err := p.inject(th, unix.SYS_RT_TGSIGQUEUEINFO, uintptr(p.Pid), uintptr(th.tid), uintptr(sig), addr); err != nil {
			return stop, fmt.Errorf("queue signal %d again: %w", sig, err)
		}
	}
	return stop, nil
}

// park brings a thread that ran injected code back to a PTRACE_EVENT_STOP
// (or to a signal-delivery-stop of a signal that arrived meanwhile, whose
// number it returns so that PTRACE_DETACH delivers it).
func (p *Process) park(th *thread) (int, error) {
	if err := ptrace(unix.PTRACE_INTERRUPT, th.tid, 0, 0); err != nil {
		return 0, fmt.Errorf("interrupt pid %d tid %d: %w", p.Pid, th.tid, err)
	}
	for {
		if err := ptrace(unix.PTRACE_CONT, th.tid, 0, 0); err != nil {
			return 0, fmt.Errorf("resume pid %d tid %d: %w", p.Pid, th.tid, err)
		}
		s, err := waitStop(th.tid)
		if err != nil {
			return 0, fmt.Errorf("wait for pid %d tid %d: %w", p.Pid, th.tid, err)
		}
		switch s.kind {
		case stopExited:
			th.gone = true
			return 0, nil
		case stopEvent:
			if s.event == unix.PTRACE_EVENT_STOP {
				th.parked = true
				return 0, nil
			}
		case stopSignal:
			if info, err := getSigInfo(th.tid); err == nil && p.takeGuard(info) && !p.keepStop {
				// Swallow it, and stop again without running.
				if err := ptrace(unix.PTRACE_INTERRUPT, th.tid, 0, 0); err != nil {
					return 0, fmt.Errorf("interrupt pid %d tid %d: %w", p.Pid, th.tid, err)
				}
				continue
			}
			th.parked = true
			return s.sig, nil
		}
	}
}

// Kill sends SIGKILL to the process and reaps each of its threads (the
// process itself too when it is our child).
func (p *Process) Kill() error {
	return p.t.Do(func() error {
		if p.done {
			return fmt.Errorf("pid %d: %w", p.Pid, ErrReleased)
		}
		p.markDone()
		p.closeMem()
		if err := unix.Kill(p.Pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("kill pid %d: %w", p.Pid, err)
		}
		return p.reapAll()
	})
}

// reapAll waits until every thread of the killed process is reaped. It
// never blocks on one particular thread: the last thread of a PID
// namespace's init waits in zap_pid_ns_processes until every other task of
// the namespace, its own traced zombie threads included, is reaped — blocking
// on it first would deadlock. So it polls each thread with WNOHANG and, when
// none moved, blocks on any tracee (or child) of this thread.
func (p *Process) reapAll() error {
	byTid := map[int]*thread{}
	for _, th := range p.threads {
		if !th.gone {
			byTid[th.tid] = th
		}
	}
	var ws unix.WaitStatus
	for len(byTid) > 0 {
		progressed := false
		for tid, th := range byTid {
			wpid, err := unix.Wait4(tid, &ws, unix.WALL|unix.WNOHANG, nil)
			switch {
			case errors.Is(err, syscall.EINTR):
				progressed = true
			case errors.Is(err, syscall.ECHILD):
				th.gone = true
				delete(byTid, tid)
				progressed = true
			case err != nil:
				return fmt.Errorf("reap pid %d tid %d: %w", p.Pid, tid, os.NewSyscallError("wait4", err))
			case wpid == tid:
				progressed = true
				if ws.Exited() || ws.Signaled() {
					th.gone = true
					delete(byTid, tid)
				}
			}
		}
		if progressed || len(byTid) == 0 {
			continue
		}
		// __WNOTHREAD: only this thread's children and tracees (wait(2)),
		// not every child of the process. (A child forked earlier by a
		// goroutine on this same OS thread can still be reaped here.)
		wpid, err := unix.Wait4(-1, &ws, unix.WALL|unix.WNOTHREAD, nil)
		switch {
		case errors.Is(err, syscall.EINTR):
		case errors.Is(err, syscall.ECHILD):
			return nil
		case err != nil:
			return fmt.Errorf("reap pid %d: %w", p.Pid, os.NewSyscallError("wait4", err))
		default:
			if th := byTid[wpid]; th != nil && (ws.Exited() || ws.Signaled()) {
				th.gone = true
				delete(byTid, wpid)
			}
		}
	}
	return nil
}
