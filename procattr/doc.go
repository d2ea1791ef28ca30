// Package procattr keeps the process-level attributes set with prctl(2),
// personality(2) and setpriority(2) — personality, dumpable, parent-death
// signal, child subreaper, no_new_privs, nice value, memory-deny-write-execute
// (set last, [RestoreLast]), keyrings, NUMA memory policy, memory-error kill policy — one file each, holding both halves: read from
// the frozen process by injected syscalls, set in the process being
// restored by injected syscalls, and the words `lazycr show` prints.
//
// The address-space attributes that prctl also sets (PR_SET_THP_DISABLE,
// PR_SET_MEMORY_MERGE) live with the memory, in package vmattr; the name
// (PR_SET_NAME) is each thread's comm, restored with the threads.
//
// Like vmattr, the package does no I/O of its own: it works through a
// [Caller] that runs a syscall inside the process.
package procattr
