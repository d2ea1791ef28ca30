package probe

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"github.com/lazycr/lazycr/internal/kabi"
	"golang.org/x/sys/unix"
)

// xstateBufSize is the buffer offered to PTRACE_GETREGSET NT_X86_XSTATE;
// the kernel shrinks iov_len to the real size (a short buffer fails).
const xstateBufSize = 64 << 10

const (
	nameSeize     = "ptrace-seize"
	nameRseq      = "ptrace-rseq"
	nameXState    = "ptrace-xstate"
	nameProcessVM = "process-vm"
	namePidfd     = "pidfd-getfd"
)

// ptraceProbes starts a child and tries the ptrace-family features on it.
// All ptrace calls come from one goroutine whose OS thread is locked before
// the child starts (the thread that seizes is the tracer; any other gets
// ESRCH). The child is killed and reaped on every path.
func ptraceProbes() []Result {
	out := make(chan []Result, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread() // the child is reaped before this runs
		out <- ptraceProbesLocked()
	}()
	return <-out
}

func ptraceProbesLocked() (res []Result) {
	c, err := startChild()
	if err != nil {
		for _, n := range []string{nameSeize, nameRseq, nameXState, nameProcessVM, namePidfd} {
			res = append(res, fail(n, true, err))
		}
		res = append(res, fail(nameSuspendSeccomp, false, err))
		return res
	}
	defer func() {
		if err := c.kill(); err != nil {
			res = append(res, fail("probe-child", true, err))
		}
	}()
	if err := seize(c); err != nil {
		res = append(res, fail(nameSeize, true, err))
		for _, n := range []string{nameRseq, nameXState, nameProcessVM} {
			res = append(res, fail(n, true, fmt.Errorf("needs %s", nameSeize)))
		}
		res = append(res, fail(nameSuspendSeccomp, false, fmt.Errorf("needs %s", nameSeize)))
		return append(res, probePidfd(c))
	}
	res = append(res, Result{Name: nameSeize, Required: true, OK: true,
		Detail: fmt.Sprintf("PTRACE_SEIZE+PTRACE_INTERRUPT stopped pid %d", c.pid)})
	res = append(res, probeRseq(c), probeXState(c), probeProcessVM(c), probePidfd(c), probeSuspendSeccomp(c))
	return res
}

// seize attaches with PTRACE_O_EXITKILL and stops the child with
// PTRACE_INTERRUPT; see ptrace(2), PTRACE_SEIZE, "group-stop".
func seize(c *child) error {
	if err := kabi.PtraceData(unix.PTRACE_SEIZE, c.pid, 0, unix.PTRACE_O_EXITKILL); err != nil {
		return fmt.Errorf("seize pid %d: %w", c.pid, err)
	}
	if err := kabi.PtraceData(unix.PTRACE_INTERRUPT, c.pid, 0, 0); err != nil {
		return fmt.Errorf("interrupt pid %d: %w", c.pid, err)
	}
	ws, err := c.waitStop()
	if err != nil {
		return err
	}
	if ws.TrapCause() != unix.PTRACE_EVENT_STOP {
		return fmt.Errorf("interrupt pid %d: stopped with status %#x, not PTRACE_EVENT_STOP", c.pid, uint32(ws))
	}
	return nil
}

func probeRseq(c *child) Result {
	cfg, err := kabi.PtraceGetRseqConfiguration(c.pid)
	if err != nil {
		return fail(nameRseq, true, fmt.Errorf("read rseq configuration of pid %d: %w", c.pid, err))
	}
	d := "PTRACE_GET_RSEQ_CONFIGURATION works"
	if cfg.RseqAbiPointer == 0 {
		d += " (child has no rseq registered)"
	} else {
		d += fmt.Sprintf(" (rseq at %#x size %d sig %#x)", cfg.RseqAbiPointer, cfg.RseqAbiSize, cfg.Signature)
	}
	return Result{Name: nameRseq, Required: true, OK: true, Detail: d}
}

func probeXState(c *child) Result {
	buf := make([]byte, xstateBufSize)
	n, err := kabi.PtraceGetRegSet(c.pid, unix.NT_X86_XSTATE, buf)
	if err != nil {
		return fail(nameXState, true, fmt.Errorf("read xstate of pid %d: %w", c.pid, err))
	}
	return Result{Name: nameXState, Required: true, OK: true, Value: uint64(n),
		Detail: fmt.Sprintf("NT_X86_XSTATE is %d bytes", n)}
}

// probeProcessVM reads 64 bytes at the child's stack pointer with
// process_vm_readv and writes them back unchanged with process_vm_writev.
func probeProcessVM(c *child) Result {
	var regs unix.PtraceRegs
	if err := kabi.Ptrace(unix.PTRACE_GETREGS, c.pid, 0, unsafe.Pointer(&regs)); err != nil {
		return fail(nameProcessVM, true, fmt.Errorf("read registers of pid %d: %w", c.pid, err))
	}
	buf := make([]byte, 64)
	local := []unix.Iovec{{Base: &buf[0]}}
	local[0].SetLen(len(buf))
	remote := []unix.RemoteIovec{{Base: uintptr(regs.Rsp), Len: len(buf)}}
	n, err := unix.ProcessVMReadv(c.pid, local, remote, 0)
	if err != nil || n != len(buf) {
		return fail(nameProcessVM, true, fmt.Errorf("read %d bytes at %#x of pid %d: n=%d: %w", len(buf), regs.Rsp, c.pid, n, os.NewSyscallError("process_vm_readv", err)))
	}
	saved := bytes.Clone(buf)
	n, err = unix.ProcessVMWritev(c.pid, local, remote, 0)
	if err != nil || n != len(buf) {
		return fail(nameProcessVM, true, fmt.Errorf("write %d bytes at %#x of pid %d: n=%d: %w", len(buf), regs.Rsp, c.pid, n, os.NewSyscallError("process_vm_writev", err)))
	}
	clear(buf)
	if _, err := unix.ProcessVMReadv(c.pid, local, remote, 0); err != nil || !bytes.Equal(buf, saved) {
		return fail(nameProcessVM, true, fmt.Errorf("reread %d bytes at %#x of pid %d: %w", len(buf), regs.Rsp, c.pid, errors.Join(errors.New("data differs"), err)))
	}
	return Result{Name: nameProcessVM, Required: true, OK: true,
		Detail: fmt.Sprintf("process_vm_readv/writev of %d bytes at the child's rsp", len(buf))}
}

// probePidfd takes the child's stdin with pidfd_open + pidfd_getfd and
// checks it is the pipe we hold the other end of.
func probePidfd(c *child) Result {
	pidfd, err := unix.PidfdOpen(c.pid, 0)
	if err != nil {
		return fail(namePidfd, true, fmt.Errorf("open pidfd of pid %d: %w", c.pid, os.NewSyscallError("pidfd_open", err)))
	}
	defer unix.Close(pidfd)
	fd, err := unix.PidfdGetfd(pidfd, 0, 0)
	if err != nil {
		return fail(namePidfd, true, fmt.Errorf("take fd 0 of pid %d: %w", c.pid, os.NewSyscallError("pidfd_getfd", err)))
	}
	defer unix.Close(fd)
	var got, want unix.Stat_t
	if err := unix.Fstat(fd, &got); err != nil {
		return fail(namePidfd, true, os.NewSyscallError("fstat", err))
	}
	if err := unix.Fstat(c.stdin, &want); err != nil {
		return fail(namePidfd, true, os.NewSyscallError("fstat", err))
	}
	if got.Ino != want.Ino || got.Dev != want.Dev {
		return fail(namePidfd, true, fmt.Errorf("fd 0 taken from pid %d is inode %d, not our pipe %d", c.pid, got.Ino, want.Ino))
	}
	return Result{Name: namePidfd, Required: true, OK: true, Detail: "pidfd_open+pidfd_getfd took the child's stdin"}
}
