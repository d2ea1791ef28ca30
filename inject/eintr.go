package inject

import (
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// A freeze interrupts blocking syscalls. Most return a restart code
// (-ERESTARTSYS and kin) that the kernel, or restore (finalRegs), turns into
// a re-execution, so the program never sees it. A few fail with EINTR
// instead, even with no signal handler, after any stop (signal(7),
// "Interruption of system calls and library functions by stop signals"):
// epoll_wait and epoll_pwait(2), semop and semtimedop(2), sigtimedwait and
// sigwaitinfo(2), and the socket calls on a socket with a timeout
// (SO_RCVTIMEO, SO_SNDTIMEO: sock_intr_errno in include/net/sock.h
// returns -EINTR then), reads and writes of such a socket too. A program
// that does not expect EINTR there (no signal was sent to it) fails. Such a
// call did nothing before failing, so when no signal is pending that could
// have interrupted it, the EINTR came from the freeze and the call is made
// again instead, as for a restart code. connect(2) is left alone: once
// interrupted, the connection goes on and a second call answers EALREADY.

// eintrOnStop are the syscalls above.
var eintrOnStop = map[uint64]bool{
	unix.SYS_EPOLL_WAIT: true, unix.SYS_EPOLL_PWAIT: true, unix.SYS_EPOLL_PWAIT2: true,
	unix.SYS_SEMOP: true, unix.SYS_SEMTIMEDOP: true,
	unix.SYS_RT_SIGTIMEDWAIT: true,
	unix.SYS_ACCEPT:          true, unix.SYS_ACCEPT4: true,
	unix.SYS_RECVFROM: true, unix.SYS_RECVMSG: true, unix.SYS_RECVMMSG: true,
	unix.SYS_SENDTO: true, unix.SYS_SENDMSG: true, unix.SYS_SENDMMSG: true,
	unix.SYS_READ: true, unix.SYS_READV: true, unix.SYS_WRITE: true, unix.SYS_WRITEV: true,
}

// RestartInterrupted makes a thread stopped at the exit of one of the
// syscalls above, failed with EINTR, make the call again when it runs
// (rax = the syscall number, rip back over the 2-byte syscall
// instruction). The caller has checked that no signal is pending for the
// thread that is not blocked (one that is would have interrupted the call
// itself: its handler runs and EINTR is right). It reports whether regs
// changed.
func RestartInterrupted(regs *unix.PtraceRegs) bool {
	if int64(regs.Orig_rax) < 0 || int64(regs.Rax) != -int64(unix.EINTR) || !eintrOnStop[regs.Orig_rax] {
		return false
	}
	regs.Rax = regs.Orig_rax
	regs.Rip -= 2
	return true
}

// signalsWaiting reports whether thread th of the released process has a
// signal pending that its mask (mask) does not block, other than SIGSTOP
// (a job-control stop, after which the call goes on): one the freeze held
// back and queues again (th.queued), or one the kernel holds for it or the
// process (/proc/PID/task/TID/status SigPnd, ShdPnd). When it cannot
// tell, it says yes (the call then fails EINTR, as it did before).
func (p *Process) signalsWaiting(th *thread, mask uint64) bool {
	const stop = uint64(1) << (unix.SIGSTOP - 1)
	pending := uint64(0)
	for _, info := range th.queued {
		if s := siginfoSigno(info); s > 0 && s <= 64 {
			pending |= 1 << (s - 1)
		}
	}
	st, err := proc.ReadTaskStatus(p.Pid, th.tid)
	if err != nil {
		return true
	}
	pending |= st.SigPnd | st.ShdPnd
	return pending&^mask&^stop != 0
}
