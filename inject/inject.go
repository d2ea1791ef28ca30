package inject

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

type stopKind int

const (
	stopExited  stopKind = iota // exited or killed, reaped
	stopSyscall                 // syscall-entry or syscall-exit stop (SIGTRAP|0x80)
	stopEvent                   // PTRACE_EVENT_* stop
	stopSignal                  // signal-delivery-stop (or a PTRACE_TRACEME group-stop)
)

type stop struct {
	kind   stopKind
	sig    int
	event  int
	status unix.WaitStatus
}

// waitStop waits for the next state change of one thread (wait4 with
// __WALL, EINTR retried) and classifies it; see ptrace(2), "Stopped states".
func waitStop(tid int) (stop, error) {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(tid, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return stop{}, os.NewSyscallError("wait4", err)
		}
		break
	}
	s := stop{status: ws}
	if ws.Exited() || ws.Signaled() {
		s.kind = stopExited
		return s, nil
	}
	s.sig = int(ws>>8) & 0xff
	s.event = int(ws>>16) & 0xff
	switch {
	case s.sig == int(unix.SIGTRAP)|0x80:
		s.kind = stopSyscall
	case s.event != 0:
		s.kind = stopEvent
	default:
		s.kind = stopSignal
	}
	return s, nil
}

func exitText(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + ws.Signal().String()
	}
	return "exited with status " + strconv.Itoa(ws.ExitStatus())
}

func siginfoSigno(info []byte) int { return int(int32(binary.LittleEndian.Uint32(info[0:]))) }
func siginfoCode(info []byte) int  { return int(int32(binary.LittleEndian.Uint32(info[8:]))) }

// Syscall runs syscall nr with up to six arguments on thread tid and returns
// its result. A result in [-4095, -1] comes back as an error wrapping the
// errno: "pid 12 tid 13: injected rt_sigaction: invalid argument".
//
// The thread's registers are put back afterwards; if it was frozen inside an
// interrupted syscall they are left pointing at a restart of that syscall, so
// the process behaves even if lazycr dies before Release.
func (p *Process) Syscall(tid int, nr uintptr, args ...uintptr) (uintptr, error) {
	var ret uintptr
	err := p.t.Do(func() error {
		th, err := p.thread(tid)
		if err != nil {
			return err
		}
		ret, err = p.inject(th, nr, args...)
		return err
	})
	return ret, err
}

// maxRestarts bounds the runs of one injected syscall that came back with a
// restart code.
const maxRestarts = 16

// isRestartCode tells an injected syscall's error that is a kernel-internal
// restart code, never seen in user space.
func isRestartCode(err error) bool {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return false
	}
	switch errno {
	case errRestartSys, errRestartNoIntr, errRestartNoHand, errRestartRestartBlk:
		return true
	}
	return false
}

// inject runs one syscall on th (injectOnce). A signal that arrives while
// it runs can make it return a kernel-internal restart code (fork's
// -ERESTARTNOINTR when a signal is pending: copy_process in kernel/fork.c)
// that the kernel turns into a restart on the way back to user space.
// Injected, the code reaches us at the syscall-exit stop; the signal is
// taken (and kept for Release) on the next resume, so running the call
// again is what the kernel would have done. Bounded, for a signal that
// keeps coming.
func (p *Process) inject(th *thread, nr uintptr, args ...uintptr) (uintptr, error) {
	for try := 0; ; try++ {
		ret, err := p.injectOnce(th, nr, args...)
		if try < maxRestarts && isRestartCode(err) {
			continue
		}
		return ret, err
	}
}

// injectOnce runs one syscall on th; at its syscall-exit stop th gets back
// its saved registers, with any syscall restart applied.
func (p *Process) injectOnce(th *thread, nr uintptr, args ...uintptr) (uintptr, error) {
	name := syscallName(nr)
	if len(args) > 6 {
		return 0, fmt.Errorf("pid %d tid %d: inject %s: %d arguments, at most 6", p.Pid, th.tid, name, len(args))
	}
	g, err := p.gadgetAddr()
	if err != nil {
		return 0, err
	}
	var a [6]uint64
	for i, v := range args {
		a[i] = uint64(v)
	}
	r := th.saved
	r.Rip, r.Rax, r.Orig_rax = uint64(g), uint64(nr), ^uint64(0)
	r.Rdi, r.Rsi, r.Rdx, r.R10, r.R8, r.R9 = a[0], a[1], a[2], a[3], a[4], a[5]
	if err := setRegs(th.tid, &r); err != nil {
		return 0, fmt.Errorf("pid %d tid %d: inject %s: %w", p.Pid, th.tid, name, err)
	}
	th.parked = false
	restore := restartApplied(th.saved)
	for range 2 { // syscall-entry stop, then syscall-exit stop
		if err := ptrace(unix.PTRACE_SYSCALL, th.tid, 0, 0); err != nil {
			return 0, fmt.Errorf("pid %d tid %d: inject %s: %w", p.Pid, th.tid, name, err)
		}
		if err := p.waitSyscallStop(th, name); err != nil {
			if !th.gone {
				_ = setRegs(th.tid, &restore)
			}
			return 0, err
		}
	}
	var out unix.PtraceRegs
	if err := getRegs(th.tid, &out); err != nil {
		return 0, fmt.Errorf("pid %d tid %d: inject %s: %w", p.Pid, th.tid, name, err)
	}
	if err := setRegs(th.tid, &restore); err != nil {
		return 0, fmt.Errorf("pid %d tid %d: restore registers after %s: %w", p.Pid, th.tid, name, err)
	}
	if ret := int64(out.Rax); ret < 0 && ret >= -4095 {
		return 0, fmt.Errorf("pid %d tid %d: %w", p.Pid, th.tid, os.NewSyscallError("injected "+name, unix.Errno(-ret)))
	}
	return uintptr(out.Rax), nil
}

// waitSyscallStop resumes past anything but the next syscall stop of th:
// signals are suppressed and kept for Release, clone children adopted, stray
// PTRACE_EVENT_STOPs passed over.
func (p *Process) waitSyscallStop(th *thread, name string) error {
	for {
		s, err := waitStop(th.tid)
		if err != nil {
			return fmt.Errorf("pid %d tid %d: inject %s: %w", p.Pid, th.tid, name, err)
		}
		switch s.kind {
		case stopSyscall:
			return nil
		case stopExited:
			th.gone = true
			return fmt.Errorf("pid %d tid %d: inject %s: %s: %w", p.Pid, th.tid, name, exitText(s.status), ErrNoProcess)
		case stopEvent:
			if s.event == unix.PTRACE_EVENT_CLONE || s.event == unix.PTRACE_EVENT_FORK || s.event == unix.PTRACE_EVENT_VFORK {
				p.adopt(th.tid)
			}
		case stopSignal:
			info, err := getSigInfo(th.tid)
			if err != nil && !errors.Is(err, unix.EINVAL) { // EINVAL: a PTRACE_TRACEME group-stop
				return fmt.Errorf("pid %d tid %d: inject %s: read siginfo: %w", p.Pid, th.tid, name, err)
			}
			if err == nil {
				sig, code := siginfoSigno(info), siginfoCode(info)
				switch unix.Signal(sig) {
				case unix.SIGSEGV, unix.SIGBUS, unix.SIGILL, unix.SIGFPE, unix.SIGTRAP:
					if code > 0 { // raised by the CPU: our gadget faulted
						return fmt.Errorf("pid %d tid %d: inject %s: gadget at %#x raised %v (code %d)", p.Pid, th.tid, name, p.gadget, unix.Signal(sig), code)
					}
				}
				if !p.takeGuard(info) {
					th.queued = append(th.queued, info)
				}
			}
		}
		if err := ptrace(unix.PTRACE_SYSCALL, th.tid, 0, 0); err != nil {
			return fmt.Errorf("pid %d tid %d: inject %s: %w", p.Pid, th.tid, name, err)
		}
	}
}

// Kernel-internal restart codes a syscall interrupted by a signal (or by
// PTRACE_INTERRUPT) leaves in rax; see arch/x86/kernel/signal.c.
const (
	errRestartSys        = 512
	errRestartNoIntr     = 513
	errRestartNoHand     = 514
	errRestartRestartBlk = 516
)

// restartApplied returns r as the kernel would leave it on return to user
// space with no signal to deliver: an interrupted syscall is set up to run
// again.
func restartApplied(r unix.PtraceRegs) unix.PtraceRegs {
	if int64(r.Orig_rax) < 0 {
		return r
	}
	switch -int64(r.Rax) {
	case errRestartSys, errRestartNoIntr, errRestartNoHand:
		r.Rax = r.Orig_rax
	case errRestartRestartBlk:
		r.Rax = unix.SYS_RESTART_SYSCALL
	default:
		return r
	}
	r.Rip -= 2
	r.Orig_rax = ^uint64(0)
	return r
}

// gadgetAddr finds (once) a `syscall` instruction in the tracee: right
// before the rip of a thread frozen inside a syscall, else anywhere in its
// executable mappings, the vDSO first.
func (p *Process) gadgetAddr() (uintptr, error) {
	if p.gadget != 0 {
		return p.gadget, nil
	}
	var two [2]byte
	for _, th := range p.threads {
		if th.gone || !th.settled || int64(th.saved.Orig_rax) < 0 || th.saved.Rip < 2 {
			continue
		}
		at := uintptr(th.saved.Rip - 2)
		if p.readMem(at, two[:]) == nil && two == [2]byte{0x0f, 0x05} {
			p.gadget = at
			return at, nil
		}
	}
	maps, err := execMappings(p.ProcPid())
	if err != nil {
		return 0, err
	}
	buf := make([]byte, 64<<10)
	for _, m := range maps {
		for at := m.start; at+1 < m.end; {
			n := min(uintptr(len(buf)), m.end-at)
			if err := p.readMem(at, buf[:n]); err != nil {
				break
			}
			if i := bytes.Index(buf[:n], []byte{0x0f, 0x05}); i >= 0 {
				p.gadget = at + uintptr(i)
				return p.gadget, nil
			}
			at += n - 1 // an instruction may straddle chunks
		}
	}
	return 0, fmt.Errorf("find a syscall instruction in pid %d: %w", p.Pid, ErrNoGadget)
}

type mapping struct{ start, end uintptr }

// execMappings lists the executable mappings of pid, [vdso] first, without
// [vsyscall] (emulated: executing it faults).
func execMappings(pid int) ([]mapping, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, fmt.Errorf("list mappings of pid %d: %w", pid, err)
	}
	defer f.Close()
	var out []mapping
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || len(fields[1]) < 3 || fields[1][2] != 'x' {
			continue
		}
		name := ""
		if len(fields) >= 6 {
			name = fields[5]
		}
		if name == "[vsyscall]" {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		s, err1 := strconv.ParseUint(lo, 16, 64)
		e, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		m := mapping{uintptr(s), uintptr(e)}
		if name == "[vdso]" {
			out = append([]mapping{m}, out...)
		} else {
			out = append(out, m)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("list mappings of pid %d: %w", pid, err)
	}
	return out, nil
}

// Scratch returns the address of a page ([ScratchSize] bytes) private to
// the engine inside the tracee, mapping it on first use with an injected
// mmap. Release, Detach and Kill unmap it.
func (p *Process) Scratch() (uintptr, error) {
	var a uintptr
	err := p.t.Do(func() error {
		if p.done {
			return fmt.Errorf("pid %d: %w", p.Pid, ErrReleased)
		}
		var err error
		a, err = p.scratchAddr()
		return err
	})
	return a, err
}

func (p *Process) scratchAddr() (uintptr, error) {
	if p.scratch != 0 {
		return p.scratch, nil
	}
	return p.mapScratch(0)
}

// MapScratch (re)maps the scratch page at addr (MAP_FIXED_NOREPLACE; 0 means
// anywhere) and returns it. In a spawned process the mapping is two pages:
// the scratch page at addr and the injection gadget in the page after it.
func (p *Process) MapScratch(addr uintptr) (uintptr, error) {
	var a uintptr
	err := p.t.Do(func() error {
		if p.done {
			return fmt.Errorf("pid %d: %w", p.Pid, ErrReleased)
		}
		var err error
		a, err = p.mapScratch(addr)
		return err
	})
	return a, err
}

func (p *Process) mapScratch(addr uintptr) (uintptr, error) {
	th, err := p.anyThread()
	if err != nil {
		return 0, err
	}
	size := uintptr(pageSize)
	prot := uintptr(unix.PROT_READ | unix.PROT_WRITE)
	if p.spawned {
		size, prot = 2*pageSize, prot|unix.PROT_EXEC
	}
	flags := uintptr(unix.MAP_PRIVATE | unix.MAP_ANONYMOUS)
	if addr != 0 {
		flags |= unix.MAP_FIXED_NOREPLACE
	}
	a, err := p.inject(th, unix.SYS_MMAP, addr, size, prot, flags, ^uintptr(0), 0)
	if err != nil {
		return 0, fmt.Errorf("map scratch in pid %d: %w", p.Pid, err)
	}
	if addr != 0 && a != addr {
		_, _ = p.inject(th, unix.SYS_MUNMAP, a, size)
		return 0, fmt.Errorf("map scratch at %#x in pid %d: got %#x", addr, p.Pid, a)
	}
	oldAddr, oldLen := p.scratch, p.scratchLen
	if p.spawned {
		if err := p.writeMem(a+pageSize, gadgetCode[:]); err != nil {
			_, _ = p.inject(th, unix.SYS_MUNMAP, a, size)
			return 0, err
		}
		p.gadget = a + pageSize
	}
	p.scratch, p.scratchLen = a, size
	if oldAddr != 0 {
		if _, err := p.inject(th, unix.SYS_MUNMAP, oldAddr, oldLen); err != nil {
			return 0, fmt.Errorf("unmap old scratch at %#x in pid %d: %w", oldAddr, p.Pid, err)
		}
	}
	return a, nil
}

// gadgetCode is `syscall; int3`, padded with int3.
var gadgetCode = [8]byte{0x0f, 0x05, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc}

func (p *Process) anyThread() (*thread, error) {
	for _, th := range p.threads {
		if !th.gone && !th.foreign && th.settled {
			return th, nil
		}
	}
	return nil, fmt.Errorf("pid %d: no thread left: %w", p.Pid, ErrNoProcess)
}
