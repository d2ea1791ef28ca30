package integration

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	lzproc "github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// TestDumprefAccountKept dumps dumpref_account (private anonymous mappings
// that are not writable: made read-only or PROT_NONE after being written,
// or dropped with MADV_DONTNEED, or written with zeros; made read-only
// unwritten; read-only from birth, written or not through /proc/self/mem)
// and restores it, plain and lazily: each restored mapping must have the
// VmFlags the original had, VM_ACCOUNT ("ac") included, and the program
// its data (it checks it every tick). QA7 F2: a mapping with no eager page
// to write was mapped with its own protection, so one the original had
// made read-only after writing it came back without "ac" (its commit
// charge gone: made writable again it would be charged anew, and could
// fail under vm.overcommit_memory=2 where the original would not); and
// one with eager pages but no "ac" was mapped writable to be filled, and
// came back with it.
func TestDumprefAccountKept(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "dumpref_account")
	type report struct {
		Pid         int    `json:"pid"`
		RoUntouched uint64 `json:"ro_untouched"`
		RoWritten   uint64 `json:"ro_written"`
		RoDropped   uint64 `json:"ro_dropped"`
		RoZeroed    uint64 `json:"ro_zeroed"`
		NoneWritten uint64 `json:"none_written"`
		RoBorn      uint64 `json:"ro_born"`
		RoForced    uint64 `json:"ro_forced"`
		NoneForced  uint64 `json:"none_forced"`
	}
	regions := func(r report) map[string]uint64 {
		return map[string]uint64{
			"ro_untouched": r.RoUntouched, "ro_written": r.RoWritten, "ro_dropped": r.RoDropped,
			"ro_zeroed": r.RoZeroed, "none_written": r.NoneWritten, "ro_born": r.RoBorn, "ro_forced": r.RoForced,
			"none_forced": r.NoneForced,
		}
	}
	flagsAt := func(t *testing.T, pid int, r report) map[string][]string {
		t.Helper()
		sm, err := lzproc.ReadSmaps(pid)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string][]string{}
		for name, a := range regions(r) {
			for _, m := range sm {
				if m.Start == a {
					// "um" is the lazy restore's registration, gone once
					// every page is in.
					out[name] = slices.DeleteFunc(slices.Clone(m.VmFlags), func(f string) bool { return f == "um" })
				}
			}
			if out[name] == nil {
				t.Fatalf("pid %d: no vma at %#x (%s)", pid, a, name)
			}
		}
		return out
	}
	// dataAt reads every region through /proc/PID/mem (which reads
	// PROT_NONE pages too).
	dataAt := func(t *testing.T, pid int, r report) map[string][]byte {
		t.Helper()
		f, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		out := map[string][]byte{}
		for name, a := range regions(r) {
			b := make([]byte, 4*4096)
			if _, err := f.ReadAt(b, int64(a)); err != nil {
				t.Fatalf("pid %d: read %s at %#x: %v", pid, name, a, err)
			}
			out[name] = b
		}
		return out
	}
	sameData := func(t *testing.T, want, got map[string][]byte) {
		t.Helper()
		for name, w := range want {
			if !bytes.Equal(got[name], w) {
				t.Errorf("%s: restored data differs from the original's", name)
			}
		}
	}
	check := func(t *testing.T, want, got map[string][]string) {
		t.Helper()
		// The original's flags must be those this test is about.
		for name, ac := range map[string]bool{"ro_untouched": false, "ro_written": true, "ro_dropped": true,
			"ro_zeroed": true, "none_written": true, "ro_born": false, "ro_forced": false, "none_forced": false} {
			if slices.Contains(want[name], "ac") != ac {
				t.Fatalf("original %s: VmFlags %q, this test expects \"ac\" %v", name, strings.Join(want[name], " "), ac)
			}
		}
		for name, w := range want {
			if !slices.Equal(got[name], w) {
				t.Errorf("%s: restored VmFlags %q, original %q", name, strings.Join(got[name], " "), strings.Join(w, " "))
			}
		}
	}
	t.Run("plain", func(t *testing.T) {
		orig := start(t, bin)
		var r report
		waitReport(t, orig, &r)
		waitTick(t, orig, "ok", 1)
		want, data := flagsAt(t, orig.pid, r), dataAt(t, orig.pid, r)
		dir := dumpKill(t, orig)
		p := restoreFrom(t, orig, dir, "--new-pid")
		requireProgress(t, p, "ok")
		check(t, want, flagsAt(t, p.pid, r))
		sameData(t, data, dataAt(t, p.pid, r))
	})
	t.Run("lazy", func(t *testing.T) {
		orig := start(t, bin)
		var r report
		waitReport(t, orig, &r)
		waitTick(t, orig, "ok", 1)
		want, data := flagsAt(t, orig.pid, r), dataAt(t, orig.pid, r)
		src := startLazySource(t, nil, orig.pid, "127.0.0.1")
		dst := startLazyTarget(t, nil, src.addr)
		p := adopt(t, lazyResumedPID(t, dst))
		p.continueOutput(orig, true)
		t.Cleanup(func() { unix.Kill(p.pid, unix.SIGKILL) })
		dst.requireExit(t, 0)
		src.requireExit(t, 0)
		requireProgress(t, p, "ok")
		check(t, want, flagsAt(t, p.pid, r))
		sameData(t, data, dataAt(t, p.pid, r))
	})
}

// TestDumprefMempolicyKept dumps dumpref_mbind (ranges with NUMA memory
// policies of their own, mbind(2): MPOL_PREFERRED, MPOL_BIND with
// MPOL_F_STATIC_NODES in the middle of a mapping, MPOL_LOCAL; and one
// without) and restores it, plain and lazily: the program checks every
// range's policy (get_mempolicy(2) MPOL_F_ADDR) and its data each round.
// The VMA policies were neither recorded nor refused: the restored ranges
// came back with the default policy, silently.
func TestDumprefMempolicyKept(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "dumpref_mbind")
	t.Run("plain", func(t *testing.T) {
		orig := startTicking(t, start, "ok", 1, bin)
		dir := dumpKill(t, orig)
		p := restoreFrom(t, orig, dir, "--new-pid")
		requireProgress(t, p, "ok")
	})
	// The dump forced onto the smaps path (failpoint vmaflags.bpf, as
	// when the BPF iterator is not available) finds them in numa_maps.
	t.Run("smaps", func(t *testing.T) {
		fp := failpointLazycr(t)
		orig := startTicking(t, start, "ok", 1, bin)
		dir := filepath.Join(t.TempDir(), "img")
		stats := statsPath(t, "dump")
		if _, e, code := runFailpoint(t, fp, "vmaflags.bpf", "", "dump", "--pid", strconv.Itoa(orig.pid), "-D", dir,
			"--leave-running", "--stats-file", stats); code != 0 {
			t.Fatalf("dump with failpoint vmaflags.bpf: exit %d\n%s", code, e)
		}
		if got := readStatsFile(t, stats).Dump.VMARead; got != "smaps" {
			t.Fatalf("dump with failpoint vmaflags.bpf read the vma flags by %q, want \"smaps\"", got)
		}
		p := restoreFrom(t, orig, dir, "--new-pid")
		requireProgress(t, p, "ok")
	})
	t.Run("lazy", func(t *testing.T) {
		orig := startTicking(t, start, "ok", 1, bin)
		src := startLazySource(t, nil, orig.pid, "127.0.0.1")
		dst := startLazyTarget(t, nil, src.addr)
		p := adopt(t, lazyResumedPID(t, dst))
		p.continueOutput(orig, true)
		t.Cleanup(func() { unix.Kill(p.pid, unix.SIGKILL) })
		requireProgress(t, p, "ok")
		dst.requireExit(t, 0)
		src.requireExit(t, 0)
		requireProgress(t, p, "ok")
	})
}

// dumpRefused runs a plain `lazycr dump` of pid (which kills the process
// when it succeeds) and requires it to be refused with stderr matching
// every pattern, leaving no image behind.
func dumpRefused(t *testing.T, what string, pid int, patterns ...string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "img")
	_, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(pid), "-D", dir)
	requireExit1(t, what, errOut, code, patterns...)
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the refused dump left %s behind (stat: %v)", dir, err)
	}
}

// TestDumprefAmbientRefused: ambient capabilities with
// SECBIT_NO_CAP_AMBIENT_RAISE are refused by the dump, naming them, and
// the process runs on. Before, the dump took it (and killed it) and only
// the restore refused: the process was lost.
func TestDumprefAmbientRefused(t *testing.T) {
	t.Parallel()
	p := startTicking(t, start, "ok", 1, buildC(t, "dumpref_ambient"))
	dumpRefused(t, "dump of a process with ambient capabilities and SECBIT_NO_CAP_AMBIENT_RAISE", p.pid,
		`unsupported: pid `+strconv.Itoa(p.pid)+` had ambient capabilities 0x400 and SECBIT_NO_CAP_AMBIENT_RAISE`)
	requireProgress(t, p, "ok")
}

// TestDumprefForeignSessionRefused: a tree whose grandchild is in a
// session other than its parent's that it does not lead is refused by the
// dump, naming the member, and every process runs on. Before, the dump
// took it (and killed the tree) and only the restore refused.
func TestDumprefForeignSessionRefused(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "dumpref_session"))
	var r struct {
		Pid        int `json:"pid"`
		Child      int `json:"child"`
		Grandchild int `json:"grandchild"`
	}
	waitReport(t, p, &r)
	t.Cleanup(func() {
		unix.Kill(r.Grandchild, unix.SIGKILL)
		unix.Kill(r.Child, unix.SIGKILL)
	})
	waitTick(t, p, "ok", 1)
	dumpRefused(t, "dump of a tree with a member in its grandparent's session", p.pid,
		fmt.Sprintf(`unsupported: pid %d is in session \d+, its parent pid %d in session %d, and it does not lead its session`, r.Grandchild, r.Child, r.Child))
	requireProgress(t, p, "ok")
	for _, pid := range []int{r.Child, r.Grandchild} {
		requireRunning(t, pid)
	}
}

// TestDumprefOneshotLimit: an epoll fd with more disarmed EPOLLONESHOT
// entries than restore re-creates (170) is refused by the dump, naming the
// count, and the process runs on (before, only the restore refused it);
// with 170 it is dumped and restored, every entry still disarmed (the
// program fails if one fires).
func TestDumprefOneshotLimit(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "dumpref_oneshot")
	t.Run("over", func(t *testing.T) {
		p := startTicking(t, start, "ok", 1, bin, "171")
		dumpRefused(t, "dump of an epoll fd with 171 disarmed entries", p.pid,
			`unsupported: 171 disarmed EPOLLONESHOT entries, more than lazycr can re-create at once \(170\)`)
		requireProgress(t, p, "ok")
	})
	t.Run("limit", func(t *testing.T) {
		p := startTicking(t, start, "ok", 1, bin, "170")
		dir := dumpKill(t, p)
		r := restoreFrom(t, p, dir, "--new-pid")
		requireProgress(t, r, "ok")
	})
}
