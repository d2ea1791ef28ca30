package inject

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ReadMem reads len(b) bytes at addr in the tracee: process_vm_readv(2),
// falling back to /proc/PID/mem for what it cannot read (r-x and PROT_NONE
// pages fail with EFAULT there; proc(5) mem reads them).
//
// process_vm_readv is no ptrace request: any thread may make it (it needs
// PTRACE_MODE_ATTACH_REALCREDS, not the tracer). A read it answers in full
// is made from the caller's thread, without the hop to the tracer thread
// and without waiting behind it: the page server reads every lazy page
// here, replies and push at once. The rest (a zombie leader, other pages)
// goes through the tracer as before.
func (p *Process) ReadMem(addr uintptr, b []byte) error {
	if len(b) > 0 && !p.released.Load() {
		n, err := unix.ProcessVMReadv(p.Pid,
			[]unix.Iovec{{Base: &b[0], Len: uint64(len(b))}},
			[]unix.RemoteIovec{{Base: addr, Len: len(b)}}, 0)
		if err == nil && n == len(b) {
			return nil
		}
	}
	return p.t.Do(func() error {
		if p.done {
			return fmt.Errorf("pid %d: %w", p.Pid, ErrReleased)
		}
		return p.readMem(addr, b)
	})
}

// WriteMem writes b at addr in the tracee: process_vm_writev(2), falling
// back to /proc/PID/mem (which writes read-only pages too).
func (p *Process) WriteMem(addr uintptr, b []byte) error {
	return p.t.Do(func() error {
		if p.done {
			return fmt.Errorf("pid %d: %w", p.Pid, ErrReleased)
		}
		return p.writeMem(addr, b)
	})
}

func (p *Process) readMem(addr uintptr, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	n, _ := unix.ProcessVMReadv(p.ProcPid(),
		[]unix.Iovec{{Base: &b[0], Len: uint64(len(b))}},
		[]unix.RemoteIovec{{Base: addr, Len: len(b)}}, 0)
	n = max(n, 0)
	if n == len(b) {
		return nil
	}
	f, err := p.memFile()
	if err != nil {
		return err
	}
	if _, err := f.ReadAt(b[n:], int64(addr)+int64(n)); err != nil {
		return fmt.Errorf("read %d bytes at %#x in pid %d: %w", len(b)-n, addr+uintptr(n), p.Pid, err)
	}
	return nil
}

func (p *Process) writeMem(addr uintptr, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	n, _ := unix.ProcessVMWritev(p.ProcPid(),
		[]unix.Iovec{{Base: &b[0], Len: uint64(len(b))}},
		[]unix.RemoteIovec{{Base: addr, Len: len(b)}}, 0)
	n = max(n, 0)
	if n == len(b) {
		return nil
	}
	f, err := p.memFile()
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(b[n:], int64(addr)+int64(n)); err != nil {
		return fmt.Errorf("write %d bytes at %#x in pid %d: %w", len(b)-n, addr+uintptr(n), p.Pid, err)
	}
	return nil
}

// memFile opens /proc/PID/mem once (O_CLOEXEC, as os.OpenFile always does).
func (p *Process) memFile() (*os.File, error) {
	if p.mem != nil {
		return p.mem, nil
	}
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", p.ProcPid()), os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open memory of pid %d: %w", p.Pid, err)
	}
	p.mem = f
	return f, nil
}

func (p *Process) closeMem() {
	if p.mem != nil {
		_ = p.mem.Close()
		p.mem = nil
	}
}
