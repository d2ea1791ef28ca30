package inject

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// guardValue is the si_value of the guard SIGSTOP, so that it is told apart
// from a SIGSTOP anyone else sends ("lazycrGS").
const guardValue = 0x53476d7263797a6c

// guardInfo is the siginfo of the guard SIGSTOP: SI_QUEUE, our pid and uid,
// guardValue. Layout (x86-64 siginfo_t, _rt member): si_signo at 0, si_code
// at 8, si_pid at 16, si_uid at 20, si_value at 24.
func guardInfo() *[sizeofSiginfo]byte {
	var b [sizeofSiginfo]byte
	binary.LittleEndian.PutUint32(b[0:], uint32(unix.SIGSTOP))
	binary.LittleEndian.PutUint32(b[8:], 0xffffffff) // SI_QUEUE (-1)
	binary.LittleEndian.PutUint32(b[16:], uint32(os.Getpid()))
	binary.LittleEndian.PutUint32(b[20:], uint32(os.Getuid()))
	binary.LittleEndian.PutUint64(b[24:], guardValue)
	return &b
}

// isGuard reports whether info is the guard SIGSTOP.
func isGuard(info []byte) bool {
	return len(info) >= 32 && siginfoSigno(info) == int(unix.SIGSTOP) && siginfoCode(info) == -1 &&
		binary.LittleEndian.Uint64(info[24:]) == guardValue
}

// Guard queues a SIGSTOP for the whole frozen process so that, if lazycr
// dies (a dead tracer detaches its tracees, ptrace(2) "Attaching and
// detaching"), the process stops before it runs one instruction of its own
// instead of running on. Each traced thread is woken by the detach inside
// the kernel; on its way back to user mode it dequeues the pending SIGSTOP
// (it cannot be blocked) and the whole group stops (signal(7), "Stop and
// continue"): the process stays in state T with its memory untouched.
//
// The signal stays pending while the process is traced. Release swallows it
// (the process runs on as if it had never been sent: no stop, no SIGCHLD to
// the parent); [Process.DetachStopped] lets it act. It is sent with
// rt_sigqueueinfo(2) and a marked siginfo, so a SIGSTOP from anyone else is
// never taken for it; since SIGSTOP is not a real-time signal, one sent by
// someone else while the guard is pending merges with it and is swallowed
// with it by Release. A SIGCONT sent to the process discards the pending
// guard (signal(7)); call Guard again after anything that may have sent one.
func (p *Process) Guard() error {
	return p.t.Do(func() error {
		if p.done {
			return fmt.Errorf("pid %d: %w", p.Pid, ErrReleased)
		}
		if p.spawned {
			return fmt.Errorf("guard pid %d: a spawned process dies with its tracer (PTRACE_O_EXITKILL)", p.Pid)
		}
		return p.sendGuard()
	})
}

func (p *Process) sendGuard() error {
	if err := sigqueueinfo(p.Pid, unix.SIGSTOP, guardInfo()); err != nil {
		return fmt.Errorf("queue the guard SIGSTOP for pid %d: %w", p.Pid, err)
	}
	p.guarded, p.guardTaken = true, false
	return nil
}

// takeGuard reports whether info is the guard (which the caller then
// suppresses instead of keeping it for Release) and notes that it was taken.
func (p *Process) takeGuard(info []byte) bool {
	if !p.guarded || !isGuard(info) {
		return false
	}
	p.guardTaken = true
	return true
}

// unguard makes sure the guard is no longer pending before the threads are
// detached: an injected getpid(2) returns to user mode through the signal
// code, which dequeues every pending deliverable signal first, the guard
// among them (waitSyscallStop suppresses it).
func (p *Process) unguard() error {
	if !p.guarded || p.guardTaken {
		return nil
	}
	th, err := p.anyThread()
	if err != nil {
		return err
	}
	if _, err := p.inject(th, unix.SYS_GETPID); err != nil {
		return fmt.Errorf("take back the guard SIGSTOP of pid %d: %w", p.Pid, err)
	}
	if p.guardTaken {
		return nil
	}
	// Not met: a SIGCONT discarded it (fine), unless it is still pending.
	pending, err := shdPnd(p.Pid)
	if err != nil {
		return fmt.Errorf("take back the guard SIGSTOP of pid %d: %w", p.Pid, err)
	}
	if pending&(1<<(unix.SIGSTOP-1)) != 0 {
		return fmt.Errorf("take back the guard SIGSTOP of pid %d: still pending after an injected syscall", p.Pid)
	}
	p.guardTaken = true
	return nil
}

// shdPnd reads the process-wide pending signal set (ShdPnd in
// /proc/PID/status, proc(5)); bit n-1 is signal n.
func shdPnd(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read status of pid %d: %w", pid, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "ShdPnd:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return 0, fmt.Errorf("read ShdPnd of pid %d: %w", pid, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("read status of pid %d: no ShdPnd", pid)
}

// DetachStopped is Release, except that the process ends stopped (state T,
// untraced) instead of running: its registers, signal masks and suppressed
// signals are put back as Release does, and the guard SIGSTOP (queued again
// if an injected syscall took it) is left pending when the threads are
// detached, so each stops before running an instruction of its own. Send
// it SIGCONT to let it run on, or serve it again (lazycr dump --lazy
// --adopt).
func (p *Process) DetachStopped() error {
	return p.t.Do(func() error {
		if p.spawned {
			return fmt.Errorf("detach pid %d stopped: a spawned process is not guarded", p.Pid)
		}
		return p.letGo(false, true)
	})
}

// RefreshGuard queues the guard SIGSTOP again if it is no longer pending (a
// SIGCONT sent to the frozen process discards it, signal(7)) and reports
// whether it had to. Call it now and then while the process stays frozen
// with no syscall injected (a page server reading its memory); it does
// nothing before Guard or after the process was let go.
func (p *Process) RefreshGuard() (bool, error) {
	again := false
	err := p.t.Do(func() error {
		if p.done {
			return fmt.Errorf("pid %d: %w", p.Pid, ErrReleased)
		}
		if !p.guarded {
			return nil
		}
		pending, err := shdPnd(p.Pid)
		if err != nil {
			return fmt.Errorf("refresh the guard SIGSTOP of pid %d: %w", p.Pid, err)
		}
		if pending&(1<<(unix.SIGSTOP-1)) != 0 {
			return nil
		}
		again = true
		return p.sendGuard()
	})
	return again, err
}
