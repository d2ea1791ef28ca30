package inject

import (
	"encoding/binary"
	"fmt"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/lazycr/lazycr/internal/kabi"
)

// threadFlags are the clone3(2) flags of a thread as glibc's pthread_create
// passes them, minus the ones that need memory in the tracee (SETTLS,
// PARENT_SETTID, CHILD_CLEARTID): the caller sets the TLS base with
// [Process.SetRegs] and the clear-tid address with an injected
// set_tid_address(2).
const threadFlags = unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND |
	unix.CLONE_THREAD | unix.CLONE_SYSVSEM

// CloneThread adds a thread to a spawned process: an injected clone3(2) on
// thread parentTid with the flags of a POSIX thread, no stack of its own,
// and, when setTid is not 0, set_tid = [setTid] so the thread gets that id
// in the process's innermost PID namespace (needs CAP_CHECKPOINT_RESTORE; an
// id in use fails with an error wrapping unix.EEXIST). It returns the new
// thread's id as the tracer sees it (PTRACE_GETEVENTMSG), the id every other
// method takes.
//
// The thread arrives attached (PTRACE_O_TRACECLONE; the parent reports
// PTRACE_EVENT_CLONE) and stopped before it ran a single instruction: being
// a child of a PTRACE_TRACEME tracee it reports a SIGSTOP
// signal-delivery-stop, which the engine suppresses. Its registers
// ([Process.Regs]) are the parent's at the clone with rax 0 and rip just
// after the gadget's `syscall`, an int3: the caller must give it real ones
// with [Process.SetRegs] (with orig_rax -1, or the kernel may apply a syscall
// restart at detach) before [Process.Detach]. Syscalls can be injected on it
// like on any other thread. [Process.Release] would let it run that int3
// after the gadget page is gone: leave such a process with Detach or Kill.
//
// The clone_args and set_tid array are written at the start of the scratch
// page, overwriting what was there.
func (p *Process) CloneThread(parentTid int, setTid int) (int, error) {
	var tid int
	err := p.t.Do(func() error {
		th, err := p.thread(parentTid)
		if err != nil {
			return err
		}
		if !p.spawned {
			return fmt.Errorf("clone thread in pid %d: %w", p.Pid, ErrNotSpawned)
		}
		n := len(p.threads)
		if _, err := p.clone3(th, threadFlags, 0, setTid); err != nil {
			return fmt.Errorf("clone thread with tid %s in pid %d: %w", tidText(setTid), p.Pid, err)
		}
		nt, err := p.adopted(n)
		if err != nil {
			return fmt.Errorf("clone thread in pid %d: %w", p.Pid, err)
		}
		tid = nt.tid
		if err := p.ensureSettled(nt); err != nil {
			return fmt.Errorf("clone thread in pid %d: %w", p.Pid, err)
		}
		if nt.gone {
			return fmt.Errorf("clone thread in pid %d: new tid %d exited: %w", p.Pid, tid, ErrNoProcess)
		}
		return nil
	})
	return tid, err
}

// CloneProcess makes a copy of a spawned stub with an injected clone3(2):
// exit_signal SIGCHLD, the given clone flags (0, or for instance
// CLONE_NEWPID to make the copy pid 1 of a new PID namespace) and, when
// setTid is not 0, set_tid = [setTid], the pid in the innermost namespace
// (the new one under CLONE_NEWPID). An id in use fails with an error wrapping
// unix.EEXIST.
//
// The copy arrives attached to the tracer (PTRACE_O_TRACEFORK; the stub
// reports PTRACE_EVENT_FORK) in a SIGSTOP signal-delivery-stop, with the
// stub's options (PTRACE_O_EXITKILL included), its scratch mapping and its
// gadget at the same addresses. The returned [Process] (Pid as seen from the
// caller's namespace) is used like a spawned one; its registers are the
// stub's at the clone with rax 0.
//
// The stub itself stays frozen and is no longer needed: the caller calls
// [Process.Kill] on it. Its death does not touch the copy, which is
// re-parented to init (or the nearest subreaper) and stays traced.
func (p *Process) CloneProcess(setTid int, flags uint64) (*Process, error) {
	var c *Process
	err := p.t.Do(func() error {
		if p.done {
			return fmt.Errorf("pid %d: %w", p.Pid, ErrReleased)
		}
		if !p.spawned {
			return fmt.Errorf("clone process %d: %w", p.Pid, ErrNotSpawned)
		}
		th, err := p.anyThread()
		if err != nil {
			return err
		}
		n := len(p.threads)
		if _, err := p.clone3(th, flags, uint64(unix.SIGCHLD), setTid); err != nil {
			return fmt.Errorf("clone process %d as pid %s: %w", p.Pid, tidText(setTid), err)
		}
		// The child was adopted as a foreign thread at its fork event: it
		// belongs to the new Process, not to the stub.
		ch, err := p.adopted(n)
		if err != nil {
			return fmt.Errorf("clone process %d: %w", p.Pid, err)
		}
		ret := ch.tid
		delete(p.byTid, ret)
		p.threads = slices.DeleteFunc(p.threads, func(x *thread) bool { return x == ch })
		c = &Process{
			Pid: ret, t: p.t, spawned: true, byTid: map[int]*thread{},
			gadget: p.gadget, scratch: p.scratch, scratchLen: p.scratchLen,
		}
		cth := c.add(ret)
		if err := c.settle(cth); err != nil {
			_ = unix.Kill(ret, unix.SIGKILL)
			_, _ = waitStop(ret)
			return fmt.Errorf("clone process %d: %w", p.Pid, err)
		}
		if cth.gone {
			return fmt.Errorf("clone process %d: new pid %d exited: %w", p.Pid, ret, ErrNoProcess)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// clone3 writes struct clone_args (and the set_tid array) at the start of
// the scratch page and injects clone3 on th. It returns the child's id.
func (p *Process) clone3(th *thread, flags, exitSignal uint64, setTid int) (int, error) {
	addr, err := p.scratchAddr()
	if err != nil {
		return 0, err
	}
	args := kabi.RemoteCloneArgs{Flags: flags, ExitSignal: exitSignal}
	buf := make([]byte, unix.CLONE_ARGS_SIZE_VER2, unix.CLONE_ARGS_SIZE_VER2+8)
	if setTid != 0 {
		args.SetTid = uint64(addr) + unix.CLONE_ARGS_SIZE_VER2
		args.SetTidSize = 1
		buf = binary.LittleEndian.AppendUint32(buf, uint32(int32(setTid))) // pid_t set_tid[1]
	}
	if _, err := binary.Encode(buf, binary.LittleEndian, &args); err != nil {
		return 0, fmt.Errorf("encode clone_args: %w", err)
	}
	if err := p.writeMem(addr, buf); err != nil {
		return 0, err
	}
	ret, err := p.inject(th, unix.SYS_CLONE3, addr, unix.CLONE_ARGS_SIZE_VER2)
	return int(ret), err
}

// adopted returns the one thread added to p.threads past index n by the
// PTRACE_EVENT_CLONE or PTRACE_EVENT_FORK stop of an injected clone3. Its
// id comes from PTRACE_GETEVENTMSG, in the tracer's PID namespace; the
// return value of clone3 is in the tracee's.
func (p *Process) adopted(n int) (*thread, error) {
	if len(p.threads) != n+1 {
		return nil, fmt.Errorf("injected clone3 reported %d new tasks, want 1", len(p.threads)-n)
	}
	return p.threads[n], nil
}

func tidText(setTid int) string {
	if setTid == 0 {
		return "any"
	}
	return fmt.Sprint(setTid)
}
