package inject

import (
	"github.com/lazycr/lazycr/internal/kabi"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ptraceRequests names the requests this package makes, for error messages.
var ptraceRequests = map[int]string{
	unix.PTRACE_SEIZE:                            "ptrace PTRACE_SEIZE",
	unix.PTRACE_INTERRUPT:                        "ptrace PTRACE_INTERRUPT",
	unix.PTRACE_DETACH:                           "ptrace PTRACE_DETACH",
	unix.PTRACE_CONT:                             "ptrace PTRACE_CONT",
	unix.PTRACE_SYSCALL:                          "ptrace PTRACE_SYSCALL",
	unix.PTRACE_GETREGS:                          "ptrace PTRACE_GETREGS",
	unix.PTRACE_SETREGS:                          "ptrace PTRACE_SETREGS",
	unix.PTRACE_GETREGSET:                        "ptrace PTRACE_GETREGSET",
	unix.PTRACE_SETREGSET:                        "ptrace PTRACE_SETREGSET",
	unix.PTRACE_SETOPTIONS:                       "ptrace PTRACE_SETOPTIONS",
	unix.PTRACE_GETEVENTMSG:                      "ptrace PTRACE_GETEVENTMSG",
	unix.PTRACE_GETSIGINFO:                       "ptrace PTRACE_GETSIGINFO",
	unix.PTRACE_GETSIGMASK:                       "ptrace PTRACE_GETSIGMASK",
	unix.PTRACE_SETSIGMASK:                       "ptrace PTRACE_SETSIGMASK",
	unix.PTRACE_PEEKSIGINFO:                      "ptrace PTRACE_PEEKSIGINFO",
	unix.PTRACE_GET_RSEQ_CONFIGURATION:           "ptrace PTRACE_GET_RSEQ_CONFIGURATION",
	unix.PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG: "ptrace PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG",
	unix.PTRACE_SECCOMP_GET_FILTER:               "ptrace PTRACE_SECCOMP_GET_FILTER",
	unix.PTRACE_SECCOMP_GET_METADATA:             "ptrace PTRACE_SECCOMP_GET_METADATA",
}

func ptraceName(req int) string {
	if n, ok := ptraceRequests[req]; ok {
		return n
	}
	return "ptrace"
}

// ptraceRaw is the one door to ptrace(2): EINTR retried, errno wrapped with
// the request's name. Pointer arguments stay unsafe.Pointer up to the call so
// the objects they point to stay alive.
func ptraceRaw(req, tid int, addr, data unsafe.Pointer) (uintptr, error) {
	for {
		r, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(tid), uintptr(addr), uintptr(data), 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, os.NewSyscallError(ptraceName(req), e)
		}
		return r, nil
	}
}

// ptrace makes a request whose arguments are plain numbers.
func ptrace(req, tid int, addr, data uintptr) error {
	for {
		_, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(tid), addr, data, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return os.NewSyscallError(ptraceName(req), e)
		}
		return nil
	}
}

// ptraceData makes a request whose data argument points into our memory.
func ptraceData(req, tid int, addr uintptr, data unsafe.Pointer) (uintptr, error) {
	for {
		r, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(tid), addr, uintptr(data), 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, os.NewSyscallError(ptraceName(req), e)
		}
		return r, nil
	}
}

func getRegs(tid int, r *unix.PtraceRegs) error {
	_, err := ptraceData(unix.PTRACE_GETREGS, tid, 0, unsafe.Pointer(r))
	return err
}

func setRegs(tid int, r *unix.PtraceRegs) error {
	_, err := ptraceData(unix.PTRACE_SETREGS, tid, 0, unsafe.Pointer(r))
	return err
}

// getRegset reads a register set (PTRACE_GETREGSET) into b and returns the
// length the kernel wrote (it shrinks iov_len).
func getRegset(tid int, nt uintptr, b []byte) (int, error) {
	iov := unix.Iovec{Base: &b[0]}
	iov.SetLen(len(b))
	if _, err := ptraceData(unix.PTRACE_GETREGSET, tid, nt, unsafe.Pointer(&iov)); err != nil {
		return 0, err
	}
	return int(iov.Len), nil
}

func setRegset(tid int, nt uintptr, b []byte) error {
	iov := unix.Iovec{Base: &b[0]}
	iov.SetLen(len(b))
	_, err := ptraceData(unix.PTRACE_SETREGSET, tid, nt, unsafe.Pointer(&iov))
	return err
}

func getEventMsg(tid int) (uint64, error) {
	var m uint64
	_, err := ptraceData(unix.PTRACE_GETEVENTMSG, tid, 0, unsafe.Pointer(&m))
	return m, err
}

func getSigInfo(tid int) ([]byte, error) {
	b := make([]byte, sizeofSiginfo)
	_, err := ptraceData(unix.PTRACE_GETSIGINFO, tid, 0, unsafe.Pointer(&b[0]))
	return b, err
}

func getSigMask(tid int) (uint64, error) {
	var m uint64
	_, err := ptraceData(unix.PTRACE_GETSIGMASK, tid, 8, unsafe.Pointer(&m))
	return m, err
}

func setSigMask(tid int, m uint64) error {
	_, err := ptraceData(unix.PTRACE_SETSIGMASK, tid, 8, unsafe.Pointer(&m))
	return err
}

// peekSigInfo reads up to len(b)/128 queued siginfos starting at off.
func peekSigInfo(tid int, off uint64, shared bool, b []byte) (int, error) {
	a := peekSigInfoArgs{Off: off, Nr: int32(len(b) / sizeofSiginfo)}
	if shared {
		a.Flags = unix.PTRACE_PEEKSIGINFO_SHARED
	}
	n, err := ptraceRaw(unix.PTRACE_PEEKSIGINFO, tid, unsafe.Pointer(&a), unsafe.Pointer(&b[0]))
	return int(n), err
}

func getSudConfig(tid int) (kabi.PtraceSudConfig, error) {
	var c kabi.PtraceSudConfig
	_, err := ptraceData(unix.PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG, tid, unsafe.Sizeof(c), unsafe.Pointer(&c))
	return c, err
}

func getRseqConfig(tid int) (RseqConfig, error) {
	var c kabi.PtraceRseqConfiguration
	_, err := ptraceData(unix.PTRACE_GET_RSEQ_CONFIGURATION, tid, unsafe.Sizeof(c), unsafe.Pointer(&c))
	return RseqConfig{Pointer: uintptr(c.RseqAbiPointer), Size: c.RseqAbiSize, Signature: c.Signature, Flags: c.Flags}, err
}
