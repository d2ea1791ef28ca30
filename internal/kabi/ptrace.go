package kabi

// PtraceRseqConfiguration is struct ptrace_rseq_configuration from
// include/uapi/linux/ptrace.h, filled by PTRACE_GET_RSEQ_CONFIGURATION
// (unix.PTRACE_GET_RSEQ_CONFIGURATION, 0x420f). The registered area itself is
// struct rseq (include/uapi/linux/rseq.h); Signature is the value the abort
// handler must be preceded by.
type PtraceRseqConfiguration struct {
	RseqAbiPointer uint64
	RseqAbiSize    uint32
	Signature      uint32
	Flags          uint32
	Pad            uint32
}

// PtraceSudConfig is struct ptrace_sud_config from
// include/uapi/linux/ptrace.h, filled by
// PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG (0x4211, Linux 6.4): a thread's
// syscall user dispatch (prctl(2) PR_SET_SYSCALL_USER_DISPATCH). Mode is
// PR_SYS_DISPATCH_OFF (0) or ON (1); Selector is the address of the
// thread's selector byte in the tracee; syscalls from [Offset, Offset+Len)
// are always allowed.
type PtraceSudConfig struct {
	Mode     uint64
	Selector uint64
	Offset   uint64
	Len      uint64
}

// RSEQ_SIG is the x86 signature glibc uses (sysdeps/unix/sysv/linux/x86/bits/rseq.h).
const RSEQ_SIG = 0x53053053
