package inject

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// SeccompFilter is one filter of a thread's seccomp chain.
type SeccompFilter struct {
	// Program is the filter's struct sock_filter array, 8 bytes per
	// instruction, as PTRACE_SECCOMP_GET_FILTER returns it.
	Program []byte
	// Log is SECCOMP_FILTER_FLAG_LOG, the only install flag the kernel
	// reports back (PTRACE_SECCOMP_GET_METADATA).
	Log bool
}

// seccompFilterFlagLog is SECCOMP_FILTER_FLAG_LOG (linux/seccomp.h).
const seccompFilterFlagLog = 1 << 1

// maxSeccompInsns is BPF_MAXINSNS, the longest program the kernel takes.
const maxSeccompInsns = 4096

// SeccompFilters returns tid's seccomp filter chain, oldest first (the
// order they were installed in). A thread not in filter mode has none.
// Reading filters needs CAP_SYS_ADMIN and a tracer not itself under seccomp
// (ptrace(2), PTRACE_SECCOMP_GET_FILTER).
func (p *Process) SeccompFilters(tid int) ([]SeccompFilter, error) {
	var out []SeccompFilter
	err := p.t.Do(func() error {
		th, err := p.thread(tid)
		if err != nil {
			return err
		}
		// Index 0 is the OLDEST filter, measured on 6.18 (kernel/seccomp.c
		// get_nth_filter walks back count-filter_off-1 steps from the
		// newest), although ptrace(2) says "the most recently installed
		// filter has the index number 0". ENOENT ends the chain. The
		// integration test TestSeccompRestore fails if the order is wrong
		// (the newest of two filters decides a tie of actions).
		for i := uint64(0); ; i++ {
			n, err := getSeccompFilter(th.tid, i, nil)
			if errors.Is(err, unix.ENOENT) {
				break
			}
			if errors.Is(err, unix.EINVAL) && i == 0 {
				return nil // not in filter mode (measured: EINVAL on 6.18)
			}
			if err != nil {
				return fmt.Errorf("read seccomp filter %d of pid %d tid %d: %w", i, p.Pid, tid, err)
			}
			if n <= 0 || n > maxSeccompInsns {
				return fmt.Errorf("read seccomp filter %d of pid %d tid %d: %d instructions", i, p.Pid, tid, n)
			}
			prog := make([]byte, n*8)
			if m, err := getSeccompFilter(th.tid, i, prog); err != nil || m != n {
				return fmt.Errorf("read seccomp filter %d of pid %d tid %d (%d instructions, got %d): %w", i, p.Pid, tid, n, m, err)
			}
			flags, err := getSeccompMetadata(th.tid, i)
			if err != nil {
				return fmt.Errorf("read seccomp metadata of filter %d of pid %d tid %d: %w", i, p.Pid, tid, err)
			}
			out = append(out, SeccompFilter{Program: prog, Log: flags&seccompFilterFlagLog != 0})
		}
		return nil
	})
	return out, err
}

// SuspendSeccomp sets PTRACE_O_SUSPEND_SECCOMP on every thread: until they
// are detached, no seccomp filter or strict mode applies to them, so the
// syscalls lazycr injects are not refused (or the thread killed) by the
// process's own filters. Threads cloned meanwhile inherit the option. It
// needs CAP_SYS_ADMIN and a tracer not under seccomp itself (ptrace(2),
// PTRACE_O_SUSPEND_SECCOMP); detaching clears it.
func (p *Process) SuspendSeccomp() error {
	return p.t.Do(p.suspendSeccomp)
}

func (p *Process) suspendSeccomp() error {
	opts := uintptr(seizeOptions)
	if p.spawned {
		opts = spawnOptions
	}
	for _, th := range p.threads {
		if th.gone {
			continue
		}
		if err := ptrace(unix.PTRACE_SETOPTIONS, th.tid, 0, opts|unix.PTRACE_O_SUSPEND_SECCOMP); err != nil {
			return fmt.Errorf("suspend seccomp of pid %d tid %d: %w", p.Pid, th.tid, err)
		}
	}
	return nil
}

// suspendSeccompIfUsed suspends seccomp (see [Process.SuspendSeccomp]) when
// any thread of a just-frozen process is in seccomp strict or filter mode,
// so that the dump's injected syscalls run whatever the filters allow.
func (p *Process) suspendSeccompIfUsed() error {
	for _, th := range p.threads {
		if th.gone {
			continue
		}
		mode, err := taskSeccompMode(p.Pid, th.tid)
		if err != nil {
			return err
		}
		if mode != 0 {
			return p.suspendSeccomp()
		}
	}
	return nil
}

// taskSeccompMode reads the "Seccomp:" line of /proc/PID/task/TID/status
// (proc(5)): 0 disabled, 1 strict, 2 filter.
func taskSeccompMode(pid, tid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
	if err != nil {
		return 0, fmt.Errorf("read seccomp mode of pid %d tid %d: %w", pid, tid, err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Seccomp:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return 0, fmt.Errorf("read seccomp mode of pid %d tid %d: %q: %w", pid, tid, line, err)
			}
			return n, nil
		}
	}
	return 0, nil // a kernel without CONFIG_SECCOMP
}
