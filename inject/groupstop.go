package inject

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// isStopSignal reports whether sig is a job-control stop signal
// (signal(7): SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU).
func isStopSignal(sig int) bool {
	switch unix.Signal(sig) {
	case unix.SIGSTOP, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU:
		return true
	}
	return false
}

// GroupStop returns the stop signal of a process that was in a job-control
// stop (state T: SIGSTOP, Ctrl-Z) when it was seized, 0 when it was running.
// Such a process stays stopped after [Process.Release].
func (p *Process) GroupStop() int {
	for _, th := range p.threads {
		if !th.gone && th.groupStop != 0 {
			return th.groupStop
		}
	}
	return 0
}

// StopOnDetach makes [Process.Detach] of a spawned process leave it in a
// job-control stop (state T), as a process stopped by SIGSTOP, instead of
// running: SIGCONT then lets it run.
func (p *Process) StopOnDetach() { p.stopOnDetach = true }

// enterGroupStop puts the whole thread group of a spawned process into a
// group-stop while th, already holding its final registers, is still
// traced. A SIGSTOP is sent to the process; th is resumed with every
// signal but SIGSTOP blocked (PTRACE_SETSIGMASK; SIGSTOP cannot be
// blocked), so it dequeues the SIGSTOP first and nothing else; it reports
// the signal-delivery-stop and is resumed with the SIGSTOP, which starts
// the group-stop (do_signal_stop: every thread gets JOBCTL_STOP_PENDING),
// reported as a stop whose PTRACE_GETSIGINFO fails EINVAL (ptrace(2),
// "Group-stop"). Its mask is then put back. When a thread of a group in
// group-stop is detached, the kernel makes it stop again before it takes
// any signal or runs an instruction (__ptrace_unlink in kernel/ptrace.c
// reinstates JOBCTL_STOP_PENDING; get_signal handles it before dequeuing),
// so no pending signal of the image is taken before a SIGCONT.
func (p *Process) enterGroupStop(th *thread) error {
	mask, err := getSigMask(th.tid)
	if err != nil {
		return fmt.Errorf("read signal mask of pid %d tid %d: %w", p.Pid, th.tid, err)
	}
	if err := unix.Kill(p.Pid, unix.SIGSTOP); err != nil {
		return fmt.Errorf("stop pid %d: %w", p.Pid, err)
	}
	if err := setSigMask(th.tid, ^uint64(0)); err != nil {
		return fmt.Errorf("block signals of pid %d tid %d: %w", p.Pid, th.tid, err)
	}
	sig := 0
	for {
		if err := ptrace(unix.PTRACE_CONT, th.tid, 0, uintptr(sig)); err != nil {
			return fmt.Errorf("resume pid %d tid %d: %w", p.Pid, th.tid, err)
		}
		s, err := waitStop(th.tid)
		if err != nil {
			return fmt.Errorf("wait for pid %d tid %d: %w", p.Pid, th.tid, err)
		}
		if s.kind == stopExited {
			th.gone = true
			return fmt.Errorf("pid %d tid %d %s while stopping", p.Pid, th.tid, exitText(s.status))
		}
		if s.kind != stopSignal || s.sig != int(unix.SIGSTOP) {
			return fmt.Errorf("pid %d tid %d: unexpected stop %#x while stopping", p.Pid, th.tid, int(s.status))
		}
		if _, err := getSigInfo(th.tid); err == nil {
			sig = int(unix.SIGSTOP) // signal-delivery-stop: deliver it
			continue
		}
		break // the group-stop
	}
	if err := setSigMask(th.tid, mask); err != nil {
		return fmt.Errorf("restore signal mask of pid %d tid %d: %w", p.Pid, th.tid, err)
	}
	return nil
}
