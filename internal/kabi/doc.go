// Package kabi mirrors, by hand, the pieces of the Linux kernel ABI that
// golang.org/x/sys/unix does not provide (userfaultfd, PAGEMAP_SCAN, rseq
// ptrace configuration, prctl_mm_map, clone_args) and holds the single door
// through which raw ioctl and ptrace calls are made.
//
// Every struct names the C header it mirrors and has a size test. Constants
// keep their kernel spelling so they can be grepped against the headers;
// x/sys/unix is reused wherever it already has a definition (PR_SET_MM_MAP,
// CLONE_ARGS_SIZE_VER*, PTRACE_GET_RSEQ_CONFIGURATION, NT_X86_XSTATE, ...).
package kabi
