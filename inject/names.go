package inject

import (
	"strconv"

	"golang.org/x/sys/unix"
)

// syscallNames names the syscalls the dump and restore sides inject, for
// error messages ("injected rt_sigaction: invalid argument").
var syscallNames = map[uintptr]string{
	unix.SYS_READ: "read", unix.SYS_WRITE: "write", unix.SYS_OPEN: "open", unix.SYS_CLOSE: "close",
	unix.SYS_LSEEK: "lseek", unix.SYS_MMAP: "mmap", unix.SYS_MPROTECT: "mprotect", unix.SYS_MUNMAP: "munmap",
	unix.SYS_BRK: "brk", unix.SYS_RT_SIGACTION: "rt_sigaction", unix.SYS_RT_SIGPROCMASK: "rt_sigprocmask",
	unix.SYS_IOCTL: "ioctl", unix.SYS_MREMAP: "mremap", unix.SYS_MADVISE: "madvise", unix.SYS_DUP: "dup",
	unix.SYS_DUP2: "dup2", unix.SYS_GETPID: "getpid", unix.SYS_SOCKET: "socket", unix.SYS_CONNECT: "connect",
	unix.SYS_BIND: "bind", unix.SYS_GETSOCKNAME: "getsockname", unix.SYS_GETPEERNAME: "getpeername",
	unix.SYS_SETSOCKOPT: "setsockopt", unix.SYS_GETSOCKOPT: "getsockopt", unix.SYS_CLONE: "clone",
	unix.SYS_EXIT: "exit", unix.SYS_FCNTL: "fcntl", unix.SYS_GETITIMER: "getitimer", unix.SYS_SETITIMER: "setitimer",
	unix.SYS_SIGALTSTACK: "sigaltstack", unix.SYS_PRCTL: "prctl", unix.SYS_ARCH_PRCTL: "arch_prctl",
	unix.SYS_GETTID: "gettid", unix.SYS_SET_TID_ADDRESS: "set_tid_address", unix.SYS_TGKILL: "tgkill",
	unix.SYS_RT_TGSIGQUEUEINFO: "rt_tgsigqueueinfo", unix.SYS_OPENAT: "openat", unix.SYS_SET_ROBUST_LIST: "set_robust_list",
	unix.SYS_GET_ROBUST_LIST: "get_robust_list", unix.SYS_TIMERFD_CREATE: "timerfd_create",
	unix.SYS_USERFAULTFD: "userfaultfd", unix.SYS_MEMFD_CREATE: "memfd_create", unix.SYS_RSEQ: "rseq",
	unix.SYS_CLONE3: "clone3", unix.SYS_CLOSE_RANGE: "close_range", unix.SYS_PIDFD_OPEN: "pidfd_open",
	unix.SYS_PIDFD_GETFD: "pidfd_getfd", unix.SYS_TIMER_GETTIME: "timer_gettime", unix.SYS_TIMER_CREATE: "timer_create",
	unix.SYS_TIMER_SETTIME: "timer_settime", unix.SYS_SCHED_GETAFFINITY: "sched_getaffinity",
	unix.SYS_SCHED_SETAFFINITY: "sched_setaffinity", unix.SYS_GETPRIORITY: "getpriority",
	unix.SYS_SETPRIORITY: "setpriority", unix.SYS_UMASK: "umask", unix.SYS_SETSID: "setsid",
	unix.SYS_SETPGID: "setpgid", unix.SYS_CHDIR: "chdir", unix.SYS_FCHDIR: "fchdir", unix.SYS_GETRLIMIT: "getrlimit",
	unix.SYS_PRLIMIT64: "prlimit64", unix.SYS_PERSONALITY: "personality", unix.SYS_SHMAT: "shmat",
	unix.SYS_SENDMSG: "sendmsg", unix.SYS_RECVMSG: "recvmsg", unix.SYS_LISTEN: "listen",
}

func syscallName(nr uintptr) string {
	if n, ok := syscallNames[nr]; ok {
		return n
	}
	return "syscall " + strconv.FormatUint(uint64(nr), 10)
}
