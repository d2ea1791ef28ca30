// Package vmattr keeps the attributes of a mapping (and of the address
// space as a whole) that are not its data: protection and the access the
// mapping may be given later, madvise state, KSM and transparent huge page
// settings, mlock and mlockall, the core dump filter.
//
// Each attribute lives in one file holding both halves, the way CRIU keeps
// one file per kind. A package of its own (not files in dump and restore)
// is what makes that possible: dump and restore both import it, so adding
// an attribute is one file here plus a test, and the halves cannot drift
// apart. The files:
//
//	prot.go     protection, max protection (VM_MAY*), file access mode
//	madvise.go  MADV_WIPEONFORK, DONTDUMP, DONTFORK, SEQUENTIAL, RANDOM
//	thp.go      MADV_HUGEPAGE/NOHUGEPAGE and prctl(PR_SET_THP_DISABLE)
//	ksm.go      MADV_MERGEABLE and prctl(PR_SET_MEMORY_MERGE)
//	anonname.go the name of an anonymous mapping (prctl PR_SET_VMA_ANON_NAME)
//	guard.go    guard pages (madvise MADV_GUARD_INSTALL), found with PAGEMAP_SCAN
//	mlock.go    mlock/mlock2(MLOCK_ONFAULT) and mlockall(MCL_FUTURE)
//	coredump.go /proc/PID/coredump_filter, read and written by lazycr
//	mempolicy.go the NUMA memory policy of a range (mbind), set when mapped
//
// The per-VMA half reads nothing new (but for guard pages, which only the
// pagemap shows, and memory policies, read with get_mempolicy(2) for the
// VMAs that have one): the image's Vma.vm_flags are the
// kernel's own record (the VmFlags line of /proc/PID/smaps, see proc(5)),
// so the dump half only refuses what cannot come back, and the restore
// half turns flags into injected syscalls. The address-space half
// (pb.MmAttrs) is read with injected prctl(2) calls, from
// /proc/PID/coredump_filter and from the VmFlags of a mapping created
// while the process is frozen (mm->def_flags, which mlockall(MCL_FUTURE)
// sets, shows nowhere else).
//
// The package does no I/O of its own: both halves work through a [Caller]
// that runs a syscall inside the process (the ptrace engine) or reads and
// writes a file of its /proc directory, so the decisions are testable with
// a recording fake.
package vmattr
