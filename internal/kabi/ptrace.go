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

// RSEQ_SIG is the x86 signature glibc uses (sysdeps/unix/sysv/linux/x86/bits/rseq.h).
const RSEQ_SIG = 0x53053053
