package inject

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Process is a process frozen by [Tracer.Seize] or spawned by
// [Tracer.Spawn]. Its methods may be called from any goroutine; they run on
// the tracer thread one at a time.
type Process struct {
	// Pid is the process (thread group) id.
	Pid int

	t       *Tracer
	spawned bool // our child, stopped at its execve (PTRACE_TRACEME)

	threads []*thread // leader first
	byTid   map[int]*thread

	gadget     uintptr // address of a `syscall` (0f 05) instruction, 0 until found
	scratch    uintptr // scratch mapping, 0 until mapped
	scratchLen uintptr
	mem        *os.File // /proc/PID/mem, opened on first use
	done       bool     // released, detached or killed (set with markDone)
	// released mirrors done for ReadMem, which reads without the tracer.
	released   atomic.Bool
	leaderGone bool // the leader is a zombie; other threads run
	guarded    bool // the guard SIGSTOP was queued (Guard)
	guardTaken bool // and a thread dequeued it since (suppressed)
	keepStop   bool // letGo of DetachStopped: the guard must act
	// stopOnDetach: Detach of a spawned process leaves it in a group-stop.
	stopOnDetach bool
}

type thread struct {
	tid     int
	saved   unix.PtraceRegs // at freeze: what Release puts back
	final   unix.PtraceRegs // what Detach leaves (SetRegs)
	settled bool            // its first stop was seen and saved was read
	parked  bool            // still in the stop it was frozen in, untouched
	gone    bool            // exited and reaped
	foreign bool            // a clone child outside the thread group: detach it
	queued  [][]byte        // siginfos suppressed while frozen, re-delivered at Release
	// groupStop is the stop signal of the PTRACE_EVENT_STOP the thread
	// was frozen in when it was in a job-control stop (state T): SIGSTOP,
	// SIGTSTP, SIGTTIN or SIGTTOU; 0 when it was running (SIGTRAP).
	groupStop int
}

const pageSize = 4096

// ScratchSize is the number of bytes usable at the address [Process.Scratch]
// returns.
const ScratchSize = pageSize

const (
	seizeOptions = unix.PTRACE_O_TRACESYSGOOD | unix.PTRACE_O_TRACECLONE
	spawnOptions = unix.PTRACE_O_EXITKILL | unix.PTRACE_O_TRACESYSGOOD | unix.PTRACE_O_TRACECLONE |
		unix.PTRACE_O_TRACEFORK
)

// Seize freezes every thread of pid: PTRACE_SEIZE (without
// PTRACE_O_EXITKILL, so the process outlives its tracer) and
// PTRACE_INTERRUPT, until each thread sits in a PTRACE_EVENT_STOP. Threads
// created meanwhile are caught by PTRACE_O_TRACECLONE and by listing
// /proc/PID/task again until the set is stable. See ptrace(2), "Attaching
// and detaching" and "PTRACE_EVENT stops".
//
// It returns [ErrNoProcess], [ErrZombie] or [ErrTraced] (wrapped) when the
// process cannot be frozen.
func (t *Tracer) Seize(pid int) (*Process, error) {
	var p *Process
	err := t.Do(func() error {
		var err error
		p, err = t.seize(pid)
		return err
	})
	return p, err
}

func (t *Tracer) seize(pid int) (*Process, error) {
	st, err := readStatus(pid)
	if err != nil {
		return nil, err
	}
	switch {
	case (st.state == 'Z' || st.state == 'X') && st.threads <= 1:
		return nil, fmt.Errorf("seize pid %d: %w", pid, ErrZombie)
	case st.tracer != 0:
		return nil, fmt.Errorf("seize pid %d: traced by pid %d: %w", pid, st.tracer, ErrTraced)
	}
	p := &Process{Pid: pid, t: t, byTid: map[int]*thread{}}
	ok := false
	defer func() {
		if !ok {
			p.abandon()
		}
	}()
	for {
		tids, err := listTasks(pid)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && len(p.threads) == 0 {
				return nil, fmt.Errorf("seize pid %d: %w", pid, ErrNoProcess)
			}
			return nil, fmt.Errorf("seize pid %d: %w", pid, err)
		}
		fresh := 0
		for _, tid := range tids {
			if p.byTid[tid] != nil {
				continue
			}
			if err := ptrace(unix.PTRACE_SEIZE, tid, 0, seizeOptions); err != nil {
				if errors.Is(err, unix.ESRCH) {
					continue // exited since the listing
				}
				if errors.Is(err, unix.EPERM) {
					// A thread that has exited but is not reaped yet refuses
					// PTRACE_SEIZE with EPERM too (ptrace_attach checks
					// exit_state): skip it like one that is gone.
					st, serr := readTaskStatus(pid, tid)
					if serr != nil || st.state == 'Z' || st.state == 'X' {
						continue
					}
					if st.tracer != 0 && st.tracer != t.tid {
						return nil, fmt.Errorf("seize pid %d tid %d: traced by pid %d: %w", pid, tid, st.tracer, ErrTraced)
					}
				}
				return nil, fmt.Errorf("seize pid %d tid %d: %w", pid, tid, err)
			}
			p.add(tid)
			fresh++
			if err := ptrace(unix.PTRACE_INTERRUPT, tid, 0, 0); err != nil && !errors.Is(err, unix.ESRCH) {
				return nil, fmt.Errorf("interrupt pid %d tid %d: %w", pid, tid, err)
			}
		}
		if err := p.settleAll(); err != nil {
			return nil, err
		}
		if fresh == 0 {
			break
		}
	}
	p.prune()
	if len(p.threads) == 0 {
		return nil, fmt.Errorf("seize pid %d: %w", pid, ErrNoProcess)
	}
	if p.threads[0].tid != pid {
		// The leader may have exited (pthread_exit in main) while other
		// threads run: it stays a zombie until they are gone, and holds no
		// memory or files any more (see [Process.LeaderExited]).
		st, err := readTaskStatus(pid, pid)
		if err != nil || (st.state != 'Z' && st.state != 'X') {
			return nil, fmt.Errorf("seize pid %d: %w", pid, ErrNoProcess)
		}
		p.leaderGone = true
	}
	if err := p.suspendSeccompIfUsed(); err != nil {
		return nil, err
	}
	ok = true
	return p, nil
}

// LeaderExited reports whether the process's main thread has exited while
// others run on: it is a zombie, not traced, and not in [Process.Threads].
// /proc/PID shows no memory, files or working directory for it; read them
// through [Process.ProcPid].
func (p *Process) LeaderExited() bool { return p.leaderGone }

// ProcPid is the id whose /proc directory shows the process's memory,
// files and working directory: the pid, or a live thread's id when the
// leader has exited (/proc/TID works for any thread, see proc(5)).
func (p *Process) ProcPid() int {
	if !p.leaderGone {
		return p.Pid
	}
	for _, th := range p.threads {
		if !th.gone && !th.foreign {
			return th.tid
		}
	}
	return p.Pid
}

// add records a traced thread; the leader goes first.
func (p *Process) add(tid int) *thread {
	th := &thread{tid: tid}
	p.byTid[tid] = th
	if tid == p.Pid {
		p.threads = slices.Insert(p.threads, 0, th)
	} else {
		p.threads = append(p.threads, th)
	}
	return th
}

// prune forgets threads that exited and detaches clone children that are
// not threads of the process.
func (p *Process) prune() {
	p.threads = slices.DeleteFunc(p.threads, func(th *thread) bool {
		if th.foreign && !th.gone {
			_ = ptrace(unix.PTRACE_DETACH, th.tid, 0, 0)
			th.gone = true
		}
		if th.gone {
			delete(p.byTid, th.tid)
		}
		return th.gone
	})
}

// settleAll waits for every thread not yet seen stopped, including those
// that clone children add while it runs.
func (p *Process) settleAll() error {
	for i := 0; i < len(p.threads); i++ {
		if th := p.threads[i]; !th.settled && !th.gone {
			if err := p.settle(th); err != nil {
				return err
			}
		}
	}
	return nil
}

// settle waits until th sits in a PTRACE_EVENT_STOP (or, for a spawned
// process, its first stop), suppressing and keeping any signal it was about
// to take, then reads its registers.
func (p *Process) settle(th *thread) error {
	for {
		s, err := waitStop(th.tid)
		if err != nil {
			return fmt.Errorf("wait for pid %d tid %d to stop: %w", p.Pid, th.tid, err)
		}
		again := false
		switch s.kind {
		case stopExited:
			th.gone, th.settled = true, true
			return nil
		case stopEvent:
			switch s.event {
			case unix.PTRACE_EVENT_STOP:
				// ptrace(2) "Group-stop": a seized tracee in group-stop
				// reports PTRACE_EVENT_STOP with the stop signal; one
				// stopped by PTRACE_INTERRUPT reports SIGTRAP.
				th.groupStop = 0
				if isStopSignal(s.sig) {
					th.groupStop = s.sig
				}
			case unix.PTRACE_EVENT_CLONE, unix.PTRACE_EVENT_FORK, unix.PTRACE_EVENT_VFORK:
				p.adopt(th.tid)
				again = true
			default:
				again = true
			}
		case stopSignal:
			info, err := getSigInfo(th.tid)
			switch {
			case errors.Is(err, unix.EINVAL): // group-stop of a PTRACE_TRACEME tracee
			case err != nil:
				return fmt.Errorf("read siginfo of pid %d tid %d: %w", p.Pid, th.tid, err)
			case p.spawned && siginfoSigno(info) == int(unix.SIGSTOP) && !th.settled:
				// The first stop of a child auto-attached to a PTRACE_TRACEME tracee.
			case p.takeGuard(info):
				again = true
			default:
				th.queued = append(th.queued, info)
				again = !p.spawned
			}
		case stopSyscall:
			again = !p.spawned
		}
		if again {
			if err := ptrace(unix.PTRACE_INTERRUPT, th.tid, 0, 0); err != nil {
				return fmt.Errorf("interrupt pid %d tid %d: %w", p.Pid, th.tid, err)
			}
			if err := ptrace(unix.PTRACE_CONT, th.tid, 0, 0); err != nil {
				return fmt.Errorf("resume pid %d tid %d: %w", p.Pid, th.tid, err)
			}
			continue
		}
		if err := getRegs(th.tid, &th.saved); err != nil {
			return fmt.Errorf("read registers of pid %d tid %d: %w", p.Pid, th.tid, err)
		}
		th.final = th.saved
		th.settled, th.parked = true, true
		if th.foreign {
			_ = ptrace(unix.PTRACE_DETACH, th.tid, 0, 0)
			th.gone = true
		}
		return nil
	}
}

// adopt records the child a PTRACE_EVENT_CLONE stop of parent announces: it
// is attached already and will report its first stop.
func (p *Process) adopt(parent int) {
	msg, err := getEventMsg(parent)
	if err != nil || msg == 0 {
		return
	}
	child := int(msg)
	if p.byTid[child] != nil {
		return
	}
	th := p.add(child)
	if _, err := os.Stat(fmt.Sprintf("/proc/%d/task/%d", p.Pid, child)); err != nil {
		th.foreign = true
	}
}

// ensureSettled makes sure a thread adopted during an injected clone has
// reported its first stop.
func (p *Process) ensureSettled(th *thread) error {
	if th.settled {
		return nil
	}
	return p.settle(th)
}

// abandon undoes a partial Seize: every thread that stopped is detached as
// it was.
func (p *Process) abandon() {
	for _, th := range p.threads {
		if th.gone {
			continue
		}
		if !th.settled {
			if p.settle(th) != nil || th.gone {
				continue
			}
		}
		_ = ptrace(unix.PTRACE_DETACH, th.tid, 0, 0)
	}
	p.markDone()
}

// markDone records that the process is released, detached or killed.
func (p *Process) markDone() {
	p.done = true
	p.released.Store(true)
}

func (p *Process) thread(tid int) (*thread, error) {
	if p.done {
		return nil, fmt.Errorf("pid %d: %w", p.Pid, ErrReleased)
	}
	th := p.byTid[tid]
	if th == nil || th.gone {
		return nil, fmt.Errorf("pid %d tid %d: %w", p.Pid, tid, ErrNoProcess)
	}
	if err := p.ensureSettled(th); err != nil {
		return nil, err
	}
	if th.gone {
		return nil, fmt.Errorf("pid %d tid %d: %w", p.Pid, tid, ErrNoProcess)
	}
	return th, nil
}

// Threads returns the ids of the process's threads, the leader first.
func (p *Process) Threads() []int {
	var tids []int
	_ = p.t.Do(func() error {
		for _, th := range p.threads {
			if !th.gone && !th.foreign {
				tids = append(tids, th.tid)
			}
		}
		return nil
	})
	return tids
}

// Regs returns the registers tid had when it was frozen (or stopped at
// execve, or made by [Process.CloneThread]): what [Process.Release] restores.
func (p *Process) Regs(tid int) (unix.PtraceRegs, error) {
	var r unix.PtraceRegs
	err := p.t.Do(func() error {
		th, err := p.thread(tid)
		if err == nil {
			r = th.saved
		}
		return err
	})
	return r, err
}

// SetRegs sets the registers [Process.Detach] leaves tid with. Release
// ignores them.
func (p *Process) SetRegs(tid int, r unix.PtraceRegs) error {
	return p.t.Do(func() error {
		th, err := p.thread(tid)
		if err == nil {
			th.final = r
		}
		return err
	})
}

// XState returns tid's extended FPU state, the NT_X86_XSTATE register set
// (an XSAVE area whose size the CPU decides). See ptrace(2), PTRACE_GETREGSET.
func (p *Process) XState(tid int) ([]byte, error) {
	var out []byte
	err := p.t.Do(func() error {
		th, err := p.thread(tid)
		if err != nil {
			return err
		}
		b := make([]byte, 64<<10) // larger than any XSAVE layout; the kernel shrinks iov_len
		n, err := getRegset(th.tid, unix.NT_X86_XSTATE, b)
		if err != nil {
			return fmt.Errorf("read xstate of pid %d tid %d: %w", p.Pid, tid, err)
		}
		out = b[:n:n]
		return nil
	})
	return out, err
}

// SetXState writes tid's NT_X86_XSTATE register set.
func (p *Process) SetXState(tid int, b []byte) error {
	return p.t.Do(func() error {
		th, err := p.thread(tid)
		if err != nil {
			return err
		}
		if len(b) == 0 {
			return fmt.Errorf("write xstate of pid %d tid %d: %w", p.Pid, tid, unix.EINVAL)
		}
		if err := setRegset(th.tid, unix.NT_X86_XSTATE, b); err != nil {
			return fmt.Errorf("write xstate of pid %d tid %d: %w", p.Pid, tid, err)
		}
		return nil
	})
}

// SigMask returns tid's blocked-signal mask (PTRACE_GETSIGMASK); bit n-1 is
// signal n. A thread frozen inside ppoll(2), pselect(2) or sigsuspend(2)
// reports the temporary mask of that call.
func (p *Process) SigMask(tid int) (uint64, error) {
	var m uint64
	err := p.t.Do(func() error {
		th, err := p.thread(tid)
		if err != nil {
			return err
		}
		if m, err = getSigMask(th.tid); err != nil {
			return fmt.Errorf("read signal mask of pid %d tid %d: %w", p.Pid, tid, err)
		}
		return nil
	})
	return m, err
}

// SetSigMask sets tid's blocked-signal mask (PTRACE_SETSIGMASK).
func (p *Process) SetSigMask(tid int, m uint64) error {
	return p.t.Do(func() error {
		th, err := p.thread(tid)
		if err != nil {
			return err
		}
		if err := setSigMask(th.tid, m); err != nil {
			return fmt.Errorf("set signal mask of pid %d tid %d: %w", p.Pid, tid, err)
		}
		return nil
	})
}

// PendingSignals returns the siginfos (128 bytes each) queued for tid, or
// with shared for the whole process (PTRACE_PEEKSIGINFO). The per-thread
// list also holds the signals the engine suppressed while the process was
// frozen: they were pending from the process's point of view.
func (p *Process) PendingSignals(tid int, shared bool) ([][]byte, error) {
	var out [][]byte
	err := p.t.Do(func() error {
		th, err := p.thread(tid)
		if err != nil {
			return err
		}
		buf := make([]byte, 32*sizeofSiginfo)
		for off := uint64(0); ; {
			n, err := peekSigInfo(th.tid, off, shared, buf)
			if err != nil {
				return fmt.Errorf("peek pending signals of pid %d tid %d: %w", p.Pid, tid, err)
			}
			if n == 0 {
				break
			}
			for i := range n {
				out = append(out, bytes.Clone(buf[i*sizeofSiginfo:(i+1)*sizeofSiginfo]))
			}
			off += uint64(n)
		}
		if !shared {
			for _, q := range th.queued {
				out = append(out, bytes.Clone(q))
			}
		}
		return nil
	})
	return out, err
}

// SyscallUserDispatch reports whether tid has syscall user dispatch on
// (prctl(2) PR_SET_SYSCALL_USER_DISPATCH), read with
// PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG, which needs no injected syscall:
// one injected into a thread whose selector blocks syscalls would raise
// SIGSYS instead of running. A kernel without the request (before 6.4,
// EIO) cannot tell: ok is false then.
func (p *Process) SyscallUserDispatch(tid int) (on, ok bool, err error) {
	err = p.t.Do(func() error {
		th, err := p.thread(tid)
		if err != nil {
			return err
		}
		c, err := getSudConfig(th.tid)
		if errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read syscall user dispatch of pid %d tid %d: %w", p.Pid, tid, err)
		}
		on, ok = c.Mode != 0, true
		return nil
	})
	return on, ok, err
}

// Rseq returns tid's rseq(2) registration (PTRACE_GET_RSEQ_CONFIGURATION).
func (p *Process) Rseq(tid int) (RseqConfig, error) {
	var c RseqConfig
	err := p.t.Do(func() error {
		th, err := p.thread(tid)
		if err != nil {
			return err
		}
		if c, err = getRseqConfig(th.tid); err != nil {
			return fmt.Errorf("read rseq configuration of pid %d tid %d: %w", p.Pid, tid, err)
		}
		return nil
	})
	return c, err
}

type status struct {
	state   byte
	tracer  int
	threads int
}

func readStatus(pid int) (status, error) {
	return parseStatus(pid, fmt.Sprintf("/proc/%d/status", pid))
}

// readTaskStatus reads the status of one thread of pid.
func readTaskStatus(pid, tid int) (status, error) {
	return parseStatus(pid, fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
}

func parseStatus(pid int, name string) (status, error) {
	var st status
	b, err := os.ReadFile(name)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			return st, fmt.Errorf("read status of pid %d: %w", pid, ErrNoProcess)
		}
		return st, fmt.Errorf("read status of pid %d: %w", pid, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "State":
			if v != "" {
				st.state = v[0]
			}
		case "TracerPid":
			st.tracer, _ = strconv.Atoi(v)
		case "Threads":
			st.threads, _ = strconv.Atoi(v)
		}
	}
	return st, nil
}

func listTasks(pid int) ([]int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, err
	}
	tids := make([]int, 0, len(ents))
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}
