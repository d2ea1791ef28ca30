package kabi

import (
	"os"
	"runtime"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// IoctlName returns the C name of an ioctl request known to this package
// ("UFFDIO_COPY"), or its hex value.
func IoctlName(req uintptr) string {
	switch req {
	case UFFDIO_API:
		return "UFFDIO_API"
	case UFFDIO_REGISTER:
		return "UFFDIO_REGISTER"
	case UFFDIO_UNREGISTER:
		return "UFFDIO_UNREGISTER"
	case UFFDIO_WAKE:
		return "UFFDIO_WAKE"
	case UFFDIO_COPY:
		return "UFFDIO_COPY"
	case UFFDIO_ZEROPAGE:
		return "UFFDIO_ZEROPAGE"
	case UFFDIO_MOVE:
		return "UFFDIO_MOVE"
	case UFFDIO_WRITEPROTECT:
		return "UFFDIO_WRITEPROTECT"
	case UFFDIO_CONTINUE:
		return "UFFDIO_CONTINUE"
	case UFFDIO_POISON:
		return "UFFDIO_POISON"
	case USERFAULTFD_IOC_NEW:
		return "USERFAULTFD_IOC_NEW"
	case PAGEMAP_SCAN:
		return "PAGEMAP_SCAN"
	case unix.TCGETS2:
		return "TCGETS2"
	case unix.TCSETS2:
		return "TCSETS2"
	case unix.TIOCGWINSZ:
		return "TIOCGWINSZ"
	case unix.TIOCGDEV:
		return "TIOCGDEV"
	case unix.TIOCGEXCL:
		return "TIOCGEXCL"
	case unix.TIOCGETD:
		return "TIOCGETD"
	case unix.TIOCGPGRP:
		return "TIOCGPGRP"
	case unix.TIOCSPGRP:
		return "TIOCSPGRP"
	case unix.TIOCGSID:
		return "TIOCGSID"
	}
	return "0x" + strconv.FormatUint(uint64(req), 16)
}

// Ioctl is ioctl(fd, req, arg) for requests whose argument is a pointer to a
// struct: EINTR is retried, arg is kept alive, and an errno comes back as
// os.NewSyscallError("ioctl UFFDIO_COPY", errno) so callers test it with
// errors.Is(err, unix.EEXIST).
func Ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	_, err := IoctlRet(fd, req, arg)
	return err
}

// IoctlRet is Ioctl that also returns the ioctl's non-negative result.
func IoctlRet(fd int, req uintptr, arg unsafe.Pointer) (int, error) {
	for {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
		runtime.KeepAlive(arg)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return -1, os.NewSyscallError("ioctl "+IoctlName(req), errno)
		}
		return int(r), nil
	}
}

// IoctlInt is Ioctl for requests whose argument is an integer
// (USERFAULTFD_IOC_NEW); it returns the ioctl's result.
func IoctlInt(fd int, req uintptr, arg uintptr) (int, error) {
	for {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return -1, os.NewSyscallError("ioctl "+IoctlName(req), errno)
		}
		return int(r), nil
	}
}

// PtraceName returns the C name of a ptrace request used by lazycr, or its
// hex value.
func PtraceName(req int) string {
	switch req {
	case unix.PTRACE_SEIZE:
		return "PTRACE_SEIZE"
	case unix.PTRACE_INTERRUPT:
		return "PTRACE_INTERRUPT"
	case unix.PTRACE_GETREGSET:
		return "PTRACE_GETREGSET"
	case unix.PTRACE_SETREGSET:
		return "PTRACE_SETREGSET"
	case unix.PTRACE_GET_RSEQ_CONFIGURATION:
		return "PTRACE_GET_RSEQ_CONFIGURATION"
	case unix.PTRACE_GETREGS:
		return "PTRACE_GETREGS"
	case unix.PTRACE_SETREGS:
		return "PTRACE_SETREGS"
	case unix.PTRACE_DETACH:
		return "PTRACE_DETACH"
	case unix.PTRACE_CONT:
		return "PTRACE_CONT"
	case unix.PTRACE_SYSCALL:
		return "PTRACE_SYSCALL"
	case unix.PTRACE_SETOPTIONS:
		return "PTRACE_SETOPTIONS"
	case unix.PTRACE_GETSIGMASK:
		return "PTRACE_GETSIGMASK"
	case unix.PTRACE_SETSIGMASK:
		return "PTRACE_SETSIGMASK"
	case unix.PTRACE_GETEVENTMSG:
		return "PTRACE_GETEVENTMSG"
	}
	return "0x" + strconv.FormatUint(uint64(req), 16)
}

// Ptrace is ptrace(req, pid, addr, data) for requests whose data is a pointer
// (or unused): EINTR is retried, data kept alive, errno wrapped as
// os.NewSyscallError("ptrace PTRACE_GETREGSET", errno). It must be called
// from the OS thread that is the tracer (see runtime.LockOSThread).
func Ptrace(req int, pid int, addr uintptr, data unsafe.Pointer) error {
	for {
		_, _, errno := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(pid), addr, uintptr(data), 0, 0)
		runtime.KeepAlive(data)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return os.NewSyscallError("ptrace "+PtraceName(req), errno)
		}
		return nil
	}
}

// PtraceGetRegSet is PTRACE_GETREGSET for note type nt (e.g.
// unix.NT_X86_XSTATE) into buf; it returns the number of bytes the kernel
// filled (it shrinks iov_len to the regset size). See ptrace(2).
func PtraceGetRegSet(pid int, nt int, buf []byte) (int, error) {
	if len(buf) == 0 {
		return 0, os.NewSyscallError("ptrace PTRACE_GETREGSET", unix.EINVAL)
	}
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	if err := Ptrace(unix.PTRACE_GETREGSET, pid, uintptr(nt), unsafe.Pointer(&iov)); err != nil {
		return 0, err
	}
	return int(iov.Len), nil
}

// PtraceGetRseqConfiguration is PTRACE_GET_RSEQ_CONFIGURATION (Linux 5.13).
func PtraceGetRseqConfiguration(pid int) (PtraceRseqConfiguration, error) {
	var c PtraceRseqConfiguration
	err := Ptrace(unix.PTRACE_GET_RSEQ_CONFIGURATION, pid, unsafe.Sizeof(c), unsafe.Pointer(&c))
	return c, err
}

// PtraceData is ptrace(req, pid, addr, data) for requests whose data is an
// integer (PTRACE_SEIZE options, PTRACE_CONT signal); see Ptrace.
func PtraceData(req int, pid int, addr, data uintptr) error {
	for {
		_, _, errno := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(pid), addr, data, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return os.NewSyscallError("ptrace "+PtraceName(req), errno)
		}
		return nil
	}
}

// PrctlPtr is prctl(option, arg2, arg3) for options whose third argument is
// a pointer (PR_SET_MM with PR_SET_MM_MAP or PR_SET_MM_MAP_SIZE).
func PrctlPtr(option int, arg2 uintptr, arg3 unsafe.Pointer, arg4 uintptr) error {
	_, _, errno := unix.Syscall6(unix.SYS_PRCTL, uintptr(option), arg2, uintptr(arg3), arg4, 0, 0)
	runtime.KeepAlive(arg3)
	if errno != 0 {
		return os.NewSyscallError("prctl", errno)
	}
	return nil
}

// PrctlMmMapSize is prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE): the size of
// struct prctl_mm_map this kernel expects.
func PrctlMmMapSize() (uint32, error) {
	var size uint32
	err := PrctlPtr(unix.PR_SET_MM, unix.PR_SET_MM_MAP_SIZE, unsafe.Pointer(&size), 0)
	return size, err
}
