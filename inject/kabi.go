package inject

// Kernel structures this package needs that golang.org/x/sys/unix lacks.
// Their sizes are checked in kabi_test.go.

// sizeofSiginfo is sizeof(siginfo_t) on every Linux ABI.
const sizeofSiginfo = 128

// peekSigInfoArgs is struct ptrace_peeksiginfo_args (include/uapi/linux/ptrace.h).
type peekSigInfoArgs struct {
	Off   uint64
	Flags uint32
	Nr    int32
}

// RseqConfig is a thread's restartable-sequences registration as reported by
// PTRACE_GET_RSEQ_CONFIGURATION; see rseq(2). A zero Pointer means none.
type RseqConfig struct {
	Pointer   uintptr // the struct rseq in the tracee
	Size      uint32  // its registered length
	Signature uint32  // the abort signature
	Flags     uint32
}
