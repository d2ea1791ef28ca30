// Package vmaflags reads the vm_flags of one process's VMAs without walking
// their page tables, and names them as /proc/PID/smaps does.
//
// /proc/PID/smaps is the only file that shows a VMA's flags (its VmFlags
// and ProtectionKey lines), but to print a record the kernel walks every
// page table of the mapping for the counters (smap_gather_stats in
// fs/proc/task_mmu.c): 30–37 ms of CPU at 4 GiB of 4 KiB pages on this VM,
// growing with memory. A BPF task_vma iterator (kernel/bpf/task_iter.c,
// Linux 5.12+; limited to one thread with bpf_iter_link_info.task.tid,
// Linux 6.1+) visits the same VMAs and copies out vm_start, vm_end and the
// raw vm_flags of each, touching no page table.
//
// The raw bits become smaps' two-letter mnemonics through a table of this
// kernel's show_smap_vma_flags (Mnemonics, ProtectionKey). The table is
// not trusted blindly: Verify compares it with an smaps read of the same
// process (two iterator reads around it, so a VMA that changed meanwhile
// is left out) and says which bits it has seen named right; a caller uses
// the iterator only for VMAs whose every bit is verified.
//
// It also says whether a VMA has a NUMA memory policy of its own
// (vm_policy set, mbind(2)), which no /proc file shows without walking the
// page tables (numa_maps walks them for its page counts, show_numa_map).
//
// Records the program writes, 32 bytes each, native byte order:
//
//	+----------+----------+----------+--------+
//	| vm_start | vm_end   | vm_flags | policy |   u64 each, one record per
//	+----------+----------+----------+--------+   VMA, in address order;
//	                                               policy is 1 or 0
//
// Load needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) and the kernel's
// BTF (/sys/kernel/btf/vmlinux, for the offsets of vm_area_struct's
// fields and the task_vma iterator's id); without them, or when the
// verifier refuses the program, it fails with an error wrapping
// ErrNotSupported, and so does Program.Open on a kernel older than 6.1.
package vmaflags
