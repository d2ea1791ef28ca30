package inject

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Exit ends a copy made by [Process.CloneProcess] the way a zombie ended,
// so that wait(2) in its parent reports status (a wait status: exit code
// in bits 8-15, or the number of the signal that killed it in bits 0-6):
// an exit by an injected exit_group(2), a death by signal by an injected
// kill(2) of itself whose signal-delivery-stop is continued with the
// signal (its action is the default one: it is still a copy of the stub).
//
// The tracer waits for this one pid (wait4(pid, __WALL), never wait4(-1)):
// since it is not the real parent, its wait detaches the dead tracee and
// the kernel notifies the real parent, for which it stays a zombie until
// that parent reaps it (ptrace(2), "the tracer ... the real parent";
// kernel/exit.c wait_task_zombie, EXIT_TRACE). The parent gets the SIGCHLD
// of that exit.
func (p *Process) Exit(status int) error {
	return p.t.Do(func() error {
		if p.done {
			return fmt.Errorf("pid %d: %w", p.Pid, ErrReleased)
		}
		if !p.spawned || len(p.threads) != 1 {
			return fmt.Errorf("exit pid %d: %w", p.Pid, ErrNotSpawned)
		}
		th := p.threads[0]
		if sig := status & 0x7f; sig != 0 {
			return p.exitBySignal(th, unix.Signal(sig))
		}
		g, err := p.gadgetAddr()
		if err != nil {
			return err
		}
		r := th.saved
		r.Rip, r.Rax, r.Orig_rax, r.Rdi = uint64(g), unix.SYS_EXIT_GROUP, ^uint64(0), uint64(status>>8&0xff)
		if err := setRegs(th.tid, &r); err != nil {
			return fmt.Errorf("exit pid %d: %w", p.Pid, err)
		}
		return p.contUntilExit(th, 0)
	})
}

// exitBySignal makes th's process kill itself with sig.
func (p *Process) exitBySignal(th *thread, sig unix.Signal) error {
	if err := setSigMask(th.tid, 0); err != nil {
		return fmt.Errorf("exit pid %d: unblock signals: %w", p.Pid, err)
	}
	self, err := p.inject(th, unix.SYS_GETPID)
	if err != nil {
		return fmt.Errorf("exit pid %d: %w", p.Pid, err)
	}
	if _, err := p.inject(th, unix.SYS_KILL, self, uintptr(sig)); err != nil {
		return fmt.Errorf("exit pid %d by %v: %w", p.Pid, sig, err)
	}
	return p.contUntilExit(th, sig)
}

// contUntilExit resumes th until its process is gone, delivering sig at
// its signal-delivery-stop.
func (p *Process) contUntilExit(th *thread, sig unix.Signal) error {
	p.closeMem()
	data := 0
	for {
		if err := ptrace(unix.PTRACE_CONT, th.tid, 0, uintptr(data)); err != nil {
			return fmt.Errorf("exit pid %d: resume: %w", p.Pid, err)
		}
		s, err := waitStop(th.tid)
		if err != nil {
			return fmt.Errorf("exit pid %d: %w", p.Pid, err)
		}
		switch s.kind {
		case stopExited:
			th.gone = true
			p.markDone()
			return nil
		case stopSignal:
			if unix.Signal(s.sig) == sig {
				data = s.sig
				continue
			}
			return fmt.Errorf("exit pid %d: unexpected signal %v on the way out", p.Pid, unix.Signal(s.sig))
		}
		data = 0
	}
}

// DropQueued forgets every signal sig the engine kept aside for the
// process's threads (signals suppressed at a signal-delivery-stop while
// it is held, which Detach would otherwise send again). It returns how many
// it dropped.
func (p *Process) DropQueued(sig unix.Signal) int {
	n := 0
	_ = p.t.Do(func() error {
		for _, th := range p.threads {
			kept := th.queued[:0]
			for _, info := range th.queued {
				if unix.Signal(siginfoSigno(info)) == sig {
					n++
					continue
				}
				kept = append(kept, info)
			}
			th.queued = kept
		}
		return nil
	})
	return n
}
