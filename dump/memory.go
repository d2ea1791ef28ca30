package dump

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/probe"
	"github.com/lazycr/lazycr/proc"
	"github.com/lazycr/lazycr/vmattr"
	"golang.org/x/sys/unix"
)

// stackEagerPages is how many pages on each side of a thread's stack
// pointer are always eager, so a resumed thread runs its first instructions
// without a round trip to the source.
const stackEagerPages = 2

// readChunk is the most page data read from the process at once.
const readChunk = 1 << 20

// collectMemory reads the VMAs, classifies every page with
// /proc/PID/pagemap and returns the memory map plus the runs whose data
// must be written to the pages file.
//
// The VMAs' flags (VmFlags, ProtectionKey) come from /proc/PID/maps and a
// BPF task_vma iterator prepared before the freeze (vmaread.go, package
// vmaflags), which walks no page table; only if that path is not
// available, or a VMA has a vm_flags bit whose name was not verified
// against smaps before the freeze, is /proc/PID/smaps read in the freeze
// as before. smaps is the costly read: the kernel walks every mapping's
// page tables for its counters (smap_gather_stats in fs/proc/task_mmu.c),
// 10–15 ms of CPU per GiB of 4 KiB pages here. Measured on this VM
// (BenchmarkReadVMAs, fill.c with the memory in one mapping, median of 3
// runs of 5 reads; LAZYCR_BENCH_4G=1 go test -run '^$' -bench
// BenchmarkReadVMAs -benchtime=5x -count=3 ./dump/), ms per read:
//
//	         64 MiB   1 GiB   4 GiB
//	smaps     0.82    11.3    43.6
//	bpf       0.049   0.047   0.089   (maps + iterator, flat)
//
// and the process's own resume gap in BenchmarkLazyTable (medians of 3,
// LAZYCR_BENCH_4G=1 … -bench BenchmarkLazyTable -benchtime=3x
// ./integration/), ms: smaps 24.6 / 36.5 / 85.8, bpf 21.7 / 20.0 / 22.4
// at 64 MiB / 1 GiB / 4 GiB (load average 2–4); in a second pair under
// load 3–9, smaps 24.9 / 45.9 / 237.1, bpf 33.7 / 26.0 / 27.2.
//
// A full dump meanwhile scans the populated ranges of the private
// anonymous mappings, which /proc/PID/maps names without a walk, on this
// goroutine (prescan), so the reads overlap. A lazy dump scans none of
// them while frozen but the sparse ones (wholeLazy): a dense one is one
// lazy run, and the page server learns which of its pages exist after the
// resume (AbsentRuns).
func (cp *Checkpoint) collectMemory() (*pb.MemoryMap, []eagerRun, error) {
	pid := cp.pid
	pp := cp.proc.ProcPid() // a live thread's /proc when the leader has exited
	cp.unscanned = 0
	type vmasRead struct {
		r   vmaRead
		err error
	}
	t0, cpu0 := time.Now(), processCPU()
	read := make(chan vmasRead, 1)
	go func() {
		r, err := readVMAs(pid, pp, cp.pre)
		read <- vmasRead{r, err}
	}()
	pm, err := proc.OpenPagemap(pp)
	if err != nil {
		<-read
		return nil, nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	defer pm.Close()
	// A lazy dump scans nothing while frozen but its sparse mappings
	// (classifyPages, wholeLazy): the populated pages of the rest are found
	// after the resume (AbsentRuns).
	var scanned map[span]*[]proc.PopulatedRegion
	if cp.opts.Mode != ModeLazy {
		scanned = prescan(pp, pm)
	}
	scanTook := time.Since(t0)
	vr := <-read
	if vr.err != nil {
		return nil, nil, fmt.Errorf("dump pid %d: %w", pid, vr.err)
	}
	maps, used, policy := vr.r.maps, vr.r.used, vr.r.policy
	cp.Stats.VMARead, cp.Stats.VMAReadTime = vr.r.how, vr.r.took
	ev := cp.opts.Log.Debug().Int("pid", pid).Str("path", vr.r.how).Dur("took", vr.r.took)
	if vr.r.why != "" {
		ev = ev.Str("why", vr.r.why)
	}
	ev.Msg("vma flags read")
	// cpu is all of collectMemory's CPU time, the walks included.
	defer func() {
		cp.opts.Log.Debug().Int("pid", pid).Dur("vmas", vr.r.took).Dur("scan", scanTook).
			Dur("cpu", processCPU()-cpu0).Msg("memory map read")
	}()
	stat, err := proc.ReadStat(pp)
	if err != nil {
		return nil, nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	auxv, err := proc.ReadAuxv(pp)
	if err != nil {
		return nil, nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	mm := &pb.MemoryMap{
		Pid: uint32(pid),
		Mm: &pb.MmFields{
			StartCode: stat.StartCode, EndCode: stat.EndCode,
			StartData: stat.StartData, EndData: stat.EndData,
			StartBrk: stat.StartBrk, StartStack: stat.StartStack,
			ArgStart: stat.ArgStart, ArgEnd: stat.ArgEnd,
			EnvStart: stat.EnvStart, EnvEnd: stat.EnvEnd,
		},
	}
	for _, a := range auxv {
		mm.Auxv = append(mm.Auxv, a.Type, a.Val)
	}
	if exe, err := proc.ReadExe(pp); err == nil {
		mm.Exe = fileIDFromStat(exe, fmt.Sprintf("/proc/%d/exe", pp))
	}
	// The current brk is the end of [heap], or start_brk when it is empty.
	mm.Mm.Brk = stat.StartBrk

	// Pages the restored process (or the kernel, before it resumes) touches
	// first are always eager: around each stack pointer, and each thread's
	// rseq area, which the kernel writes when rseq is registered again
	// during restore — a lazy page there would fault before any handler runs.
	var hot []uint64
	for _, tid := range cp.proc.Threads() {
		r, err := cp.proc.Regs(tid)
		if err != nil {
			return nil, nil, fmt.Errorf("dump pid %d: %w", pid, err)
		}
		hot = append(hot, r.Rsp)
		if rs, err := cp.proc.Rseq(tid); err == nil && rs.Pointer != 0 {
			hot = append(hot, uint64(rs.Pointer), uint64(rs.Pointer)+uint64(rs.Size)-1)
		}
	}

	// Guard pages (vmattr/guard.go): which VMAs to scan for them depends
	// on what this kernel shows.
	guards, _ := probe.GuardRegions()
	scan := func(start, end, mask uint64) ([]proc.Range, error) {
		return proc.ScanCategory(pm, start, end, mask)
	}

	var runs []eagerRun
	for i := range maps {
		m := &maps[i]
		v, err := cp.vmaOf(m)
		if err != nil {
			return nil, nil, err
		}
		if v.Kind == pb.VmaKind_VMA_KIND_HEAP {
			mm.Mm.Brk = v.End
		}
		// A NUMA memory policy of its own (mbind): read for the few VMAs
		// that have one (vmaRead.policy), restored when it is mapped.
		if policy[m.Start] {
			if err := vmattr.DumpPolicy(callerOn{cp, cp.live()}, v); err != nil {
				return nil, nil, fmt.Errorf("dump pid %d: vma %#x-%#x %s: %w", pid, m.Start, m.End, m.Path, err)
			}
		}
		u, known := used[span{m.Start, m.End}]
		if err := cp.classifyPages(pm, m, v, hot, scanned[span{m.Start, m.End}], u, known); err != nil {
			return nil, nil, err
		}
		if err := vmattr.DumpGuards(v, guards, scan); err != nil {
			where := fmt.Sprintf("dump pid %d: vma %#x-%#x %s", pid, m.Start, m.End, m.Path)
			if errors.Is(err, vmattr.ErrRefused) {
				return nil, nil, fmt.Errorf("%s: %w: %w", where, ErrUnsupported, err)
			}
			return nil, nil, fmt.Errorf("%s: %w", where, err)
		}
		for _, r := range v.Pages {
			if r.State == pb.PageState_PAGE_STATE_EAGER {
				runs = append(runs, eagerRun{vma: v, run: r, prot: v.Prot})
			}
		}
		mm.Vmas = append(mm.Vmas, v)
	}
	if mm.Attrs, err = cp.mmAttrs(); err != nil {
		return nil, nil, err
	}
	return mm, runs, nil
}

// mmAttrs reads the address space's own attributes (package vmattr). The
// VmFlags mm->def_flags gives new mappings are read off the scratch
// mapping, made now that the VMAs are recorded; only when something is
// locked (VmLck in /proc/PID/status, which counts the scratch too if
// mlockall(MCL_FUTURE) is on) are they read, through the iterator when its
// bits are verified, else from smaps (flagsAt).
func (cp *Checkpoint) mmAttrs() (*pb.MmAttrs, error) {
	pid, pp := cp.pid, cp.proc.ProcPid()
	scratch, err := cp.proc.Scratch()
	if err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	st, err := proc.ReadStatus(pp)
	if err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	var fresh []string
	if lck := st.Other["VmLck"]; lck != "" && lck != "0 kB" {
		if fresh, err = flagsAt(pid, pp, cp.pre, uint64(scratch)); err != nil {
			return nil, fmt.Errorf("dump pid %d: %w", pid, err)
		}
	}
	a, err := vmattr.DumpMM(callerOn{cp, cp.live()}, fresh)
	if err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	return a, nil
}

// live is a thread to inject syscalls on: the leader, or the first live
// thread when the leader has exited.
func (cp *Checkpoint) live() int {
	if ts := cp.proc.Threads(); len(ts) > 0 {
		return ts[0]
	}
	return cp.pid
}

// callerOn runs injected syscalls on one thread of the frozen process
// (vmattr.Caller, procattr.Caller).
type callerOn struct {
	cp  *Checkpoint
	tid int
}

func (c callerOn) Call(nr uintptr, args ...uintptr) (uintptr, error) {
	return c.cp.proc.Syscall(c.tid, nr, args...)
}

// CallIn writes in at the start of the scratch page and passes its address
// for the argument equal to vmattr.In.
func (c callerOn) CallIn(in []byte, nr uintptr, args ...uintptr) (uintptr, error) {
	scratch, err := c.cp.proc.Scratch()
	if err != nil {
		return 0, err
	}
	if err := c.cp.proc.WriteMem(scratch, in); err != nil {
		return 0, err
	}
	return c.cp.proc.Syscall(c.tid, nr, vmattr.WithIn(args, scratch)...)
}

// CallOut is injectOut: procattr.Out and outArg are the same marker.
func (c callerOn) CallOut(out []byte, nr uintptr, args ...uintptr) error {
	return c.cp.injectOut(c.tid, out, nr, args...)
}

// ReadProc reads /proc/PID/name of the process (its leader, or a live
// thread when the leader has exited).
func (c callerOn) ReadProc(name string) ([]byte, error) {
	return proc.ReadPidFile(c.cp.proc.ProcPid(), name)
}

// WriteProc writes /proc/PID/name of the process (the dump only reads).
func (c callerOn) WriteProc(name string, data []byte) error {
	return proc.WritePidFile(c.cp.proc.ProcPid(), name, data)
}

// vmaOf turns one smaps entry into a Vma, refusing what lazycr cannot
// restore.
func (cp *Checkpoint) vmaOf(m *proc.Mapping) (*pb.Vma, error) {
	pid := cp.pid
	v := &pb.Vma{
		Start: m.Start, End: m.End, Prot: uint32(m.Prot()), Shared: m.Shared,
		Offset: m.Offset, VmFlags: m.VmFlags, Name: m.Path,
	}
	where := fmt.Sprintf("dump pid %d: vma %#x-%#x %s", pid, m.Start, m.End, m.Path)
	if m.ProtectionKey != 0 {
		return nil, fmt.Errorf("%s: %w: memory protection key %d (pkey_mprotect)", where, ErrUnsupported, m.ProtectionKey)
	}
	if !m.IsSpecial() {
		if err := vmattr.Check(v); err != nil {
			return nil, fmt.Errorf("%s: %w: %w", where, ErrUnsupported, err)
		}
	}
	if !m.IsSpecial() {
		for _, f := range m.VmFlags {
			switch f {
			case "io", "pf":
				return nil, fmt.Errorf("%s: %w: device (I/O or PFN) mapping", where, ErrUnsupported)
			case "ht":
				return nil, fmt.Errorf("%s: %w: hugetlbfs mapping", where, ErrUnsupported)
			}
		}
	}
	shm, isShm, err := cp.shmOf(m)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	if isShm {
		if cp.shm == nil {
			cp.shm = map[*pb.Vma]shmRef{}
		}
		cp.shm[v] = shm
	}
	switch {
	case m.Path == "[heap]":
		v.Kind = pb.VmaKind_VMA_KIND_HEAP
	case m.Path == "[stack]":
		v.Kind = pb.VmaKind_VMA_KIND_STACK
	case m.Path == "[vdso]":
		v.Kind = pb.VmaKind_VMA_KIND_VDSO
	case m.Path == "[vvar]":
		v.Kind = pb.VmaKind_VMA_KIND_VVAR
	case m.Path == "[vvar_vclock]":
		v.Kind = pb.VmaKind_VMA_KIND_VVAR_VCLOCK
	case m.Path == "[vsyscall]":
		v.Kind = pb.VmaKind_VMA_KIND_VSYSCALL
	case m.Path == "" || strings.HasPrefix(m.Path, "[anon:"):
		v.Kind = pb.VmaKind_VMA_KIND_ANON
		if m.Shared {
			v.Kind = pb.VmaKind_VMA_KIND_SHARED_ANON
		}
	case m.Path == "/dev/zero (deleted)" || strings.HasPrefix(m.Path, "[anon_shmem:"):
		if !m.Shared {
			v.Kind = pb.VmaKind_VMA_KIND_ANON
		} else {
			v.Kind = pb.VmaKind_VMA_KIND_SHARED_ANON
		}
	case m.Shared && shm.kind != pb.ShmKind_SHM_KIND_UNSPECIFIED:
		// A memfd or an unlinked tmpfs file mapped shared: its pages
		// are taken like shared anonymous memory's (shm.go).
		v.Kind = pb.VmaKind_VMA_KIND_SHARED_ANON
	case strings.HasPrefix(m.Path, "/memfd:"):
		return nil, fmt.Errorf("%s: %w: memfd mapping", where, ErrUnsupported)
	case strings.HasPrefix(m.Path, "/SYSV"):
		return nil, fmt.Errorf("%s: %w: System V shared memory", where, ErrUnsupported)
	case m.Path == "/secretmem (deleted)":
		// memfd_secret(2) memory (mm/secretmem.c names its files
		// "secretmem"): removed from the kernel's direct map, so neither
		// ptrace nor /proc/PID/mem can read it.
		return nil, fmt.Errorf("%s: %w: memfd_secret memory, which no other process can read", where, ErrUnsupported)
	case m.Deleted():
		return nil, fmt.Errorf("%s: %w: the mapped file was deleted", where, ErrUnsupported)
	case strings.HasPrefix(m.Path, "/"):
		v.Kind = pb.VmaKind_VMA_KIND_FILE
		id := fileIDFromStat(m.Path, fmt.Sprintf("/proc/%d/map_files/%x-%x", cp.proc.ProcPid(), m.Start, m.End))
		if id.Inode != m.Inode {
			return nil, fmt.Errorf("%s: %w: file inode %d does not match the mapping's %d", where, ErrUnsupported, id.Inode, m.Inode)
		}
		v.File = id
	default:
		return nil, fmt.Errorf("%s: %w: special mapping %q", where, ErrUnsupported, m.Path)
	}
	return v, nil
}

// fileIDFromStat records path, statting via (a /proc link that reaches the
// very file the process has, even in another mount namespace).
func fileIDFromStat(path, via string) *pb.FileID {
	id := &pb.FileID{Path: path}
	var st unix.Stat_t
	if err := unix.Stat(via, &st); err != nil {
		if err := unix.Stat(path, &st); err != nil {
			return id
		}
	}
	id.Dev = st.Dev
	id.Inode = st.Ino
	id.Size = uint64(st.Size)
	id.MtimeUnixNano = st.Mtim.Nano()
	return id
}

// lazy reports whether v's populated private anonymous pages may be left
// for the page server: in a lazy dump, unless the VMA is locked (mlock
// populates the whole range on restore, before any fault could be served;
// see vmattr.Populated).
func (cp *Checkpoint) lazy(v *pb.Vma) bool {
	return cp.opts.Mode == ModeLazy && !vmattr.Populated(v)
}

// pageState decides one page's state.
func (cp *Checkpoint) pageState(v *pb.Vma, e proc.PagemapEntry, nearSP bool) pb.PageState {
	switch v.Kind {
	case pb.VmaKind_VMA_KIND_VDSO, pb.VmaKind_VMA_KIND_VVAR, pb.VmaKind_VMA_KIND_VVAR_VCLOCK, pb.VmaKind_VMA_KIND_VSYSCALL:
		return pb.PageState_PAGE_STATE_UNSPECIFIED // kernel-provided: no page data
	case pb.VmaKind_VMA_KIND_FILE:
		if v.Shared {
			return pb.PageState_PAGE_STATE_FILE // the file itself holds the data
		}
		// A private file page that is present (or swapped) with bit 61
		// clear was copied on write: its data is no longer the file's.
		// See Documentation/admin-guide/mm/pagemap.rst.
		if e.Populated() && !e.FileOrSharedAnon() {
			return pb.PageState_PAGE_STATE_EAGER
		}
		return pb.PageState_PAGE_STATE_FILE
	case pb.VmaKind_VMA_KIND_SHARED_ANON:
		// Shared memory pages may exist in the shmem object without being
		// mapped here; take the whole mapping.
		//
		// Eager even in a lazy dump: shared memory is in the skeleton and
		// written before the resume, so freeze→resume grows with it.
		// Measured on this 2-vCPU VM (loopback, shared with other jobs;
		// mean of 5, ms): a parent and child sharing MAP_SHARED anonymous
		// memory, against the same bytes in private memory (served
		// lazily), freeze→resume:
		//
		//	16 MiB   227 shared  77 private
		//	128 MiB 1445 shared 130 private (shared runs: 808–1857)
		//	1 GiB   refused     210 private (all lazy pages in: 1922)
		//
		// 1 GiB was refused after the freeze then (image files were
		// limited to 256 MiB); the skeleton's pages files are now streamed
		// from the frozen process (PagesStream) and the limit is what the
		// target can hold, so it migrates. Since (3 runs each, 4 runs of
		// the benchmark, ms): 128 MiB freeze→resume 544–1018 (source's
		// dump 172–260, was 1076–1110); 1 GiB 3641–4587 (dump 835–1087,
		// the target's fetch 1558–2419 and restore 1009–1417: it holds the
		// skeleton in fresh memory, then writes it into the shmem).
		// Command: cd integration && LAZYCR_BENCH_SHM_GIB=1 go test
		// -run '^$' -bench BenchmarkLazyShm -benchtime=5x .
		//
		// So shared memory should be served lazily: BenchmarkShmUffd
		// (testdata/progs/shmuffd, 128 MiB and 1 GiB) has UFFDIO_COPY into
		// shmem at 2.2–2.6 GB/s (4 and 64 KiB calls; anonymous 2.4–3.0)
		// and a fault answered from another process at p50 4.6–4.8 µs
		// (4 KiB), as for private memory. MISSING mode fits: a page copied
		// through any one member's uffd lands in the shmem page cache and
		// every other mapping sees it without a fault. MINOR mode
		// (MISSING|MINOR, lazycr pwrite(2)s the object at 2.3–2.6 GB/s,
		// UFFDIO_CONTINUE maps 64 KiB runs at 13–22 GB/s, a MINOR fault
		// costs p50 3.1–3.6 µs) gains nothing measurable over MISSING and needs
		// a filled-once map so pwrite never overwrites a page a member
		// already changed. It is not done yet because, to be exact (all
		// checked by BenchmarkShmUffd on 6.18; the memory types are in
		// Documentation/admin-guide/mm/userfaultfd.rst, "MISSING_SHMEM"):
		//   - every mapping of the object in every member must stay
		//     registered until the object is complete: a mapping not
		//     registered (or whose uffd closed) fills a missing page with
		//     zeros, silently, and a later UFFDIO_COPY fails EEXIST;
		//   - a fault blocked on member B's uffd is not woken by a copy
		//     through A's: the handler must UFFDIO_WAKE B's;
		//   - UFFD_EVENT_REMOVE is the same for MADV_DONTNEED (the data
		//     stays in the object: refetch) and MADV_REMOVE (gone: zero),
		//     so the private-memory rule "removed, never fill" is wrong
		//     for one of them;
		//   - read(2)/write(2)/fallocate(2) through an fd of the object
		//     never fault: only objects reachable through mappings alone
		//     (anonymous shared, System V, a memfd or /dev/shm file no
		//     process holds open) could be lazy.
		return pb.PageState_PAGE_STATE_EAGER
	default: // private anonymous: anon, heap, stack
		if !e.Populated() {
			return pb.PageState_PAGE_STATE_ZERO
		}
		if cp.lazy(v) && !nearSP {
			return pb.PageState_PAGE_STATE_LAZY
		}
		return pb.PageState_PAGE_STATE_EAGER
	}
}

// prescan lists the populated ranges of each private anonymous mapping of
// /proc/PID/maps (read without walking page tables), keyed by the
// mapping's range. A mapping it could not scan is left out: classifyPages
// scans it then, or falls back to the pagemap.
func prescan(pp int, pm *os.File) map[span]*[]proc.PopulatedRegion {
	maps, err := proc.ReadMaps(pp)
	if err != nil {
		return nil
	}
	out := make(map[span]*[]proc.PopulatedRegion, len(maps))
	for i := range maps {
		m := &maps[i]
		if !privateAnon(m) {
			continue
		}
		regions, err := proc.ScanPopulated(pm, m.Start, m.End)
		if err != nil {
			return out
		}
		out[span{m.Start, m.End}] = &regions
	}
	return out
}

// processCPU is the CPU time (user and system) this process has used so
// far, see getrusage(2): the smaps walk is charged to the reading thread.
func processCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// privateAnon reports whether vmaOf makes m an ANON, HEAP or STACK Vma.
func privateAnon(m *proc.Mapping) bool {
	if m.Shared {
		return false
	}
	return m.Path == "" || m.Path == "[heap]" || m.Path == "[stack]" || strings.HasPrefix(m.Path, "[anon:") ||
		m.Path == "/dev/zero (deleted)" || strings.HasPrefix(m.Path, "[anon_shmem:")
}

// classifyPages tiles v with page runs. scanned, when not nil, is the
// populated ranges of exactly [m.Start, m.End), scanned while frozen
// (prescan). used is how many bytes of the mapping were populated, by
// smaps' Rss and Swap, if known (vmaRead.used).
func (cp *Checkpoint) classifyPages(pm *os.File, m *proc.Mapping, v *pb.Vma, hot []uint64, scanned *[]proc.PopulatedRegion, used uint64, known bool) error {
	switch v.Kind {
	case pb.VmaKind_VMA_KIND_VDSO, pb.VmaKind_VMA_KIND_VVAR, pb.VmaKind_VMA_KIND_VVAR_VCLOCK, pb.VmaKind_VMA_KIND_VSYSCALL:
		return nil
	}
	switch v.Kind {
	case pb.VmaKind_VMA_KIND_ANON, pb.VmaKind_VMA_KIND_HEAP, pb.VmaKind_VMA_KIND_STACK:
		if cp.lazy(v) && known && wholeLazy(m.End-m.Start, used) {
			// The whole VMA is lazy (but its hot pages): which pages it
			// populated is found after the resume (AbsentRuns), so the
			// freeze does not walk its page tables at all.
			cp.anonRuns(v, []proc.PopulatedRegion{{Start: v.Start, End: v.End}}, hot)
			if used < m.End-m.Start {
				cp.unscanned += (m.End - m.Start - used) / image.PageSize
			}
			return nil
		}
		// Private anonymous memory only needs "populated or not": ask for
		// ranges (PAGEMAP_SCAN) instead of reading 8 bytes per page, so
		// the freeze does not grow with the size of the memory.
		if scanned != nil {
			cp.anonRuns(v, *scanned, hot)
			return nil
		}
		regions, err := proc.ScanPopulated(pm, m.Start, m.End)
		if err == nil {
			cp.anonRuns(v, regions, hot)
			return nil
		}
		if !errors.Is(err, proc.ErrScanUnsupported) {
			return fmt.Errorf("dump pid %d: vma %#x-%#x: %w", cp.pid, m.Start, m.End, err)
		}
	}
	if v.Kind == pb.VmaKind_VMA_KIND_FILE && v.Shared {
		// Every page is the file's (pageState): no need to read 8 bytes of
		// pagemap per page of what may be a large mapped file.
		v.Pages = append(v.Pages, &pb.PageRun{Addr: m.Start, Npages: (m.End - m.Start) / image.PageSize, State: pb.PageState_PAGE_STATE_FILE})
		return nil
	}
	if v.Kind == pb.VmaKind_VMA_KIND_FILE {
		// A private file mapping: only the pages copied on write are its
		// own (pageState); ask for those (costs what is populated) rather
		// than read the pagemap of the whole mapping.
		copied, err := proc.ScanCopied(pm, m.Start, m.End)
		if err == nil {
			at := m.Start
			add := func(s, e uint64, st pb.PageState) {
				if s < e {
					v.Pages = append(v.Pages, &pb.PageRun{Addr: s, Npages: (e - s) / image.PageSize, State: st})
				}
			}
			for _, r := range copied {
				s, e := max(r.Start, m.Start), min(r.End, m.End)
				if s >= e {
					continue
				}
				add(at, s, pb.PageState_PAGE_STATE_FILE)
				add(s, e, pb.PageState_PAGE_STATE_EAGER)
				at = e
			}
			add(at, m.End, pb.PageState_PAGE_STATE_FILE)
			return nil
		}
		if !errors.Is(err, proc.ErrScanUnsupported) {
			return fmt.Errorf("dump pid %d: vma %#x-%#x: %w", cp.pid, m.Start, m.End, err)
		}
	}
	entries, err := proc.ReadPagemap(pm, m.Start, m.End)
	if err != nil {
		return fmt.Errorf("dump pid %d: vma %#x-%#x: %w", cp.pid, m.Start, m.End, err)
	}
	spans := hotSpans(v, hot)
	var cur *pb.PageRun
	for i, e := range entries {
		addr := m.Start + uint64(i)*image.PageSize
		for len(spans) > 0 && spans[0].e <= addr {
			spans = spans[1:]
		}
		near := len(spans) > 0 && spans[0].s <= addr
		st := cp.pageState(v, e, near)
		if cur != nil && cur.State == st {
			cur.Npages++
			continue
		}
		cur = &pb.PageRun{Addr: addr, Npages: 1, State: st}
		v.Pages = append(v.Pages, cur)
	}
	return nil
}

// wholeLazySlack is how much of a private anonymous mapping may be
// unpopulated (by smaps' Rss and Swap) and the mapping still be made one
// lazy run without a scan (wholeLazy).
const wholeLazySlack = 64 << 20

// wholeLazy reports whether a lazy private anonymous mapping of size bytes,
// used of them populated, is made one lazy run (but its hot pages) without
// scanning its page tables while frozen: when some of it but at most half
// of it, or at most wholeLazySlack, was never populated, by smaps' Rss and
// Swap (Rss does not count the shared zero page). On the BPF path
// (vmaread.go) used is smaps' from before the freeze: a hint, since the
// choice only trades scan time against the size of the lazy runs, and
// correctness does not depend on it (a page counted but unpopulated is an
// absent page the page server finds after the resume; one populated since
// is in the run all the same). A mapping without a hint is scanned. A sparse
// mapping (a large reservation with little touched) is scanned instead:
// PAGEMAP_SCAN skips unpopulated page tables, so that costs what is
// populated, and the lazy runs (the page server's and the handler's
// bitmaps, one bit per page each) stay the size of the data rather than
// of the reservation.
func wholeLazy(size, used uint64) bool {
	if used == 0 {
		// Nothing populated (a PROT_NONE reservation, glibc's arena
		// tails): the scan finds no page tables to walk.
		return false
	}
	if used >= size {
		return true
	}
	return size-used <= max(used, wholeLazySlack)
}

// pageAppender is where eager page data goes: a pages file or memory.
type pageAppender interface {
	Append(b []byte) (uint64, error)
	Size() uint64
}

// span is an address range [s, e).
type span struct{ s, e uint64 }

// hotSpans returns the ranges of v that must be eager around the hot
// addresses (stack pointers, rseq areas), sorted and merged.
func hotSpans(v *pb.Vma, hot []uint64) []span {
	var hs []span
	for _, h := range hot {
		lo := h&^(image.PageSize-1) - stackEagerPages*image.PageSize
		hi := h&^(image.PageSize-1) + (stackEagerPages+1)*image.PageSize
		lo, hi = max(lo, v.Start), min(hi, v.End)
		if lo < hi {
			hs = append(hs, span{lo, hi})
		}
	}
	sort.Slice(hs, func(i, j int) bool { return hs[i].s < hs[j].s })
	merged := hs[:0]
	for _, h := range hs {
		if k := len(merged); k > 0 && h.s <= merged[k-1].e {
			merged[k-1].e = max(merged[k-1].e, h.e)
			continue
		}
		merged = append(merged, h)
	}
	return merged
}

// anonRuns tiles a private anonymous VMA with runs from its populated
// regions: gaps and zero-page-only ranges are ZERO; populated pages are
// EAGER in a full dump, LAZY in a lazy one except the hot pages (around a
// stack pointer or an rseq area), which stay EAGER.
func (cp *Checkpoint) anonRuns(v *pb.Vma, regions []proc.PopulatedRegion, hot []uint64) {
	add := func(addr, end uint64, st pb.PageState) {
		if end <= addr {
			return
		}
		n := (end - addr) / image.PageSize
		if k := len(v.Pages); k > 0 && v.Pages[k-1].State == st && v.Pages[k-1].Addr+v.Pages[k-1].Npages*image.PageSize == addr {
			v.Pages[k-1].Npages += n
			return
		}
		v.Pages = append(v.Pages, &pb.PageRun{Addr: addr, Npages: n, State: st})
	}
	hs := hotSpans(v, hot)
	populated := pb.PageState_PAGE_STATE_EAGER
	if cp.lazy(v) {
		populated = pb.PageState_PAGE_STATE_LAZY
	}
	at := v.Start
	for _, r := range regions {
		s, e := max(r.Start, v.Start), min(r.End, v.End)
		if s >= e {
			continue
		}
		add(at, s, pb.PageState_PAGE_STATE_ZERO)
		if r.ZeroPFN {
			add(s, e, pb.PageState_PAGE_STATE_ZERO)
			at = e
			continue
		}
		for _, h := range hs {
			if h.e <= s || h.s >= e {
				continue
			}
			add(s, max(s, h.s), populated)
			hs0, he0 := max(s, h.s), min(e, h.e)
			add(hs0, he0, pb.PageState_PAGE_STATE_EAGER)
			s = he0
		}
		add(s, e, populated)
		at = e
	}
	add(at, v.End, pb.PageState_PAGE_STATE_ZERO)
}

// writePages reads every eager run of pid from the frozen process and
// appends it to w, recording each run's offset. In a full dump, pages of private or
// shared anonymous memory that hold only zeros are left out: their run is
// split and they become ZERO runs, which restore leaves unpopulated (a fresh
// anonymous page reads as zero, see mmap(2) MAP_ANONYMOUS), so the image is
// the size of the data. The check costs next to nothing: a page of data
// differs from zero within its first bytes, and the pages are read anyway.
// A lazy dump keeps its few eager pages whole (they are there so that the
// kernel and the first instructions never fault on a registered range).
//
// ctx is checked before each chunk: an interrupt (Ctrl-C) stops the
// writing, and the dump fails as a whole.
func (cp *Checkpoint) writePages(ctx context.Context, w pageAppender, pid uint32) error {
	runs := cp.eager[pid]
	buf := make([]byte, readChunk)
	split := map[*pb.PageRun][]*pb.PageRun{}
	var skipped uint64
	for _, er := range runs {
		r := er.run
		sparse := cp.opts.Mode != ModeLazy && zeroSkippable(er.vma)
		r.Offset = w.Size()
		left := r.Npages * image.PageSize
		addr := r.Addr
		var parts []*pb.PageRun
		for left > 0 {
			n := min(left, uint64(len(buf)))
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := cp.proc.ReadMem(uintptr(addr), buf[:n]); err != nil {
				return fmt.Errorf("read pages %#x-%#x: %w", addr, addr+n, err)
			}
			if !sparse {
				if _, err := w.Append(buf[:n]); err != nil {
					return err
				}
				addr += n
				left -= n
				continue
			}
			// Append each stretch of non-zero pages at once.
			for p := uint64(0); p < n; {
				zero := isZero(buf[p : p+image.PageSize])
				q := p + image.PageSize
				for q < n && isZero(buf[q:q+image.PageSize]) == zero {
					q += image.PageSize
				}
				run := &pb.PageRun{Addr: addr + p, Npages: (q - p) / image.PageSize, State: pb.PageState_PAGE_STATE_ZERO}
				if zero {
					skipped += run.Npages
				} else {
					off, err := w.Append(buf[p:q])
					if err != nil {
						return err
					}
					run.State, run.Offset = pb.PageState_PAGE_STATE_EAGER, off
				}
				parts = appendRun(parts, run)
				p = q
			}
			addr += n
			left -= n
		}
		if sparse {
			split[r] = parts
		}
	}
	if len(split) == 0 {
		return nil
	}
	// The eager runs are now the parts: a second call writes those.
	var now []eagerRun
	done := map[*pb.Vma]bool{}
	for _, er := range runs {
		v := er.vma
		if done[v] {
			continue
		}
		done[v] = true
		v.Pages = resplit(v.Pages, split)
		for _, r := range v.Pages {
			if r.State == pb.PageState_PAGE_STATE_EAGER {
				now = append(now, eagerRun{vma: v, run: r, prot: er.prot})
			}
		}
	}
	cp.eager[pid] = now
	cp.Stats.PagesEager -= skipped
	cp.Stats.PagesZero += skipped
	return nil
}

// appendRun appends r to runs, or extends the last run with it when r
// continues it: same state, next address and, for EAGER, next offset in the
// pages file.
func appendRun(runs []*pb.PageRun, r *pb.PageRun) []*pb.PageRun {
	if k := len(runs); k > 0 {
		last := runs[k-1]
		if last.State == r.State && last.Addr+last.Npages*image.PageSize == r.Addr &&
			(r.State != pb.PageState_PAGE_STATE_EAGER || last.Offset+last.Npages*image.PageSize == r.Offset) {
			last.Npages += r.Npages
			return runs
		}
	}
	return append(runs, r)
}

// resplit replaces the runs writePages split by their parts, merging
// neighbours that continue each other (appendRun).
func resplit(pages []*pb.PageRun, split map[*pb.PageRun][]*pb.PageRun) []*pb.PageRun {
	var out []*pb.PageRun
	for _, r := range pages {
		parts, ok := split[r]
		if !ok {
			parts = []*pb.PageRun{r}
		}
		for _, p := range parts {
			out = appendRun(out, p)
		}
	}
	return out
}

// zeroSkippable reports whether v's pages that read as zero may be left out
// of the image: anonymous memory, private or shared, whose restore maps it
// fresh (and so zero) before writing the eager pages. A private file
// mapping's copied-on-write page must stay even when zero: leaving it out
// would show the file's data there again.
func zeroSkippable(v *pb.Vma) bool {
	switch v.Kind {
	case pb.VmaKind_VMA_KIND_ANON, pb.VmaKind_VMA_KIND_HEAP, pb.VmaKind_VMA_KIND_STACK, pb.VmaKind_VMA_KIND_SHARED_ANON:
		return true
	}
	return false
}

// zeroPage is a page of zeros to compare with.
var zeroPage = make([]byte, image.PageSize)

// isZero reports whether the page b holds only zero bytes.
func isZero(b []byte) bool { return bytes.Equal(b, zeroPage) }
