package restore

import (
	"bytes"
	"fmt"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// seccomp(2) operations and flags (include/uapi/linux/seccomp.h).
const (
	seccompSetModeStrict   = 0
	seccompSetModeFilter   = 1
	seccompFilterFlagTsync = 1 << 0
	seccompFilterFlagLog   = 1 << 1
	sockFprogSize          = 16 // struct sock_fprog: u16 len, pad, filter pointer
)

// restoreSeccomp installs every thread's seccomp filter chain, oldest first,
// and puts threads that were in strict mode back in it.
//
// Injected syscalls are subject to the process's filters (the kernel runs
// seccomp after the ptrace syscall-entry stop), so the process's threads
// get PTRACE_O_SUSPEND_SECCOMP first: everything restore injects after
// this step (credentials, the userfaultfd hand-over, the scratch munmap at
// Detach) runs unfiltered, and the filters apply from the moment the
// threads are detached, since detaching clears the option (ptrace(2)).
//
// Installing a filter needs CAP_SYS_ADMIN or no_new_privs in the calling
// thread (seccomp(2)): this step runs before the credentials are dropped,
// so no_new_privs stays exactly as dumped (procattr sets it only if the
// original had it).
//
// The longest chain prefix every thread has is installed once with
// SECCOMP_FILTER_FLAG_TSYNC, so those filters are shared by the threads as
// they were in the original (a later TSYNC by the process then succeeds as
// it would have); the rest of each thread's chain is installed on that
// thread alone. Filters are compared by content, the only view the kernel
// gives (there is no kcmp for them).
//
// Afterwards every thread's mode and chain are read back (status, then
// PTRACE_SECCOMP_GET_FILTER) and compared with the image.
func (r *Process) restoreSeccomp() error {
	threads := r.img.Threads
	used := false
	for _, t := range threads {
		switch t.SeccompMode {
		case image.SeccompModeDisabled:
		case image.SeccompModeFilter, image.SeccompModeStrict:
			used = true
		default:
			return fmt.Errorf("tid %d: %w: seccomp mode %d", t.Tid, ErrIncompatible, t.SeccompMode)
		}
	}
	if !used {
		return nil
	}
	if err := r.b.p.SuspendSeccomp(); err != nil {
		return err
	}
	shared, first := commonSeccompPrefix(threads), threads[0]
	if r.img.LeaderExited {
		// The leader is re-created only to exit again at the resume
		// (leaderExit): TSYNC would give it the filters too, and a filter
		// may forbid its exit. Each live thread gets its own chain.
		shared = 0
	}
	for i := range shared {
		if err := r.installSeccomp(r.tids[first.Tid], first.SeccompFilters[i], seccompFilterFlagTsync); err != nil {
			return err
		}
	}
	for _, t := range threads {
		for _, f := range t.SeccompFilters[shared:] {
			if err := r.installSeccomp(r.tids[t.Tid], f, 0); err != nil {
				return err
			}
		}
	}
	// Strict mode allows only read, write, _exit and sigreturn (seccomp(2)):
	// set last, the suspension lets the rest of the restore run.
	for _, t := range threads {
		if t.SeccompMode != image.SeccompModeStrict {
			continue
		}
		if _, err := r.b.callOn(r.tids[t.Tid], unix.SYS_SECCOMP, seccompSetModeStrict, 0, 0); err != nil {
			return fmt.Errorf("set seccomp strict mode on tid %d: %w", r.tids[t.Tid], err)
		}
	}
	for _, t := range threads {
		tid := r.tids[t.Tid]
		st, err := proc.ReadTaskStatus(r.b.pid, tid)
		if err != nil {
			return err
		}
		if st.Seccomp != int(t.SeccompMode) || st.SeccompFilters != len(t.SeccompFilters) {
			return fmt.Errorf("tid %d: seccomp mode %d with %d filters after restore, image has mode %d with %d", tid, st.Seccomp, st.SeccompFilters, t.SeccompMode, len(t.SeccompFilters))
		}
		if t.SeccompMode != image.SeccompModeFilter {
			continue
		}
		got, err := r.b.p.SeccompFilters(tid)
		if err != nil {
			return err
		}
		if len(got) != len(t.SeccompFilters) {
			return fmt.Errorf("tid %d: %d seccomp filters installed, image has %d", tid, len(got), len(t.SeccompFilters))
		}
		for i, f := range t.SeccompFilters {
			if !bytes.Equal(got[i].Program, f.Program) || got[i].Log != (f.Flags&seccompFilterFlagLog != 0) {
				return fmt.Errorf("tid %d: seccomp filter %d reads back different from the image", tid, i)
			}
		}
	}
	return nil
}

// commonSeccompPrefix returns how many filters, oldest first, every thread's
// chain starts with (0 if a thread has none).
func commonSeccompPrefix(ts []*pb.Thread) int {
	n := len(ts[0].SeccompFilters)
	for _, t := range ts[1:] {
		n = min(n, len(t.SeccompFilters))
		for i := range n {
			a, b := ts[0].SeccompFilters[i], t.SeccompFilters[i]
			if a.Flags != b.Flags || !bytes.Equal(a.Program, b.Program) {
				n = i
				break
			}
		}
	}
	return n
}

// installSeccomp injects seccomp(SECCOMP_SET_MODE_FILTER, flags, &fprog) on
// thread tid. The program goes right after the struct sock_fprog on the
// scratch page when it fits, else into a temporary mapping unmapped again
// at once. With SECCOMP_FILTER_FLAG_TSYNC a positive result is the id of a
// thread that could not be synchronized (seccomp(2), RETURN VALUE).
func (r *Process) installSeccomp(tid int, f *pb.SeccompFilter, flags uintptr) error {
	b := r.b
	if err := image.ValidateSeccomp(&pb.Thread{Tid: uint32(tid), SeccompMode: image.SeccompModeFilter, SeccompFilters: []*pb.SeccompFilter{f}}); err != nil {
		return err
	}
	if f.Flags&^seccompFilterFlagLog != 0 {
		return fmt.Errorf("tid %d: %w: seccomp filter flags %#x", tid, ErrIncompatible, f.Flags)
	}
	flags |= uintptr(f.Flags)
	prog := b.scratch + sockFprogSize
	if len(f.Program) > scratchSize-sockFprogSize {
		size := (uintptr(len(f.Program)) + image.PageSize - 1) &^ (image.PageSize - 1)
		addr, err := b.call(unix.SYS_MMAP, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uintptr(0), 0)
		if err != nil {
			return fmt.Errorf("map %d bytes for a seccomp filter: %w", size, err)
		}
		defer func() {
			if _, err := b.call(unix.SYS_MUNMAP, addr, size); err != nil {
				r.opts.Log.Warn().Err(err).Int("pid", b.pid).Msg("unmap the seccomp filter's temporary mapping")
			}
		}()
		prog = addr
	}
	if err := b.p.WriteMem(prog, f.Program); err != nil {
		return fmt.Errorf("write seccomp filter for tid %d: %w", tid, err)
	}
	fprog, err := b.put(0, le(uint16(len(f.Program)/image.SeccompInsnSize), [6]byte{}, uint64(prog)))
	if err != nil {
		return err
	}
	ret, err := b.callOn(tid, unix.SYS_SECCOMP, seccompSetModeFilter, flags, fprog)
	if err != nil {
		return fmt.Errorf("install seccomp filter (%d instructions, flags %#x) on tid %d: %w", len(f.Program)/image.SeccompInsnSize, flags, tid, err)
	}
	if ret != 0 {
		return fmt.Errorf("install seccomp filter on tid %d: thread %d could not be synchronized (SECCOMP_FILTER_FLAG_TSYNC)", tid, ret)
	}
	return nil
}
