package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
)

// TestSeccompRestore round-trips a process whose two threads run under
// seccomp filters (testdata/progs/seccomp.c): a filter shared by both
// threads, and a newer one on the main thread only. After `dump -D` /
// `restore -D` each thread must still see its own chain in force and in
// order (getppid fails EACCES on main, EPERM on the other thread), the same
// Seccomp mode and Seccomp_filters count in /proc/thread-self/status, and
// no_new_privs as it was. The shared filter kills the process on munmap
// and userfaultfd, which restore injects after installing it: it must
// survive that too. The "log" variant installs both with
// SECCOMP_FILTER_FLAG_LOG (restore reads each chain back and compares the
// flag) and has no_new_privs set.
func TestSeccompRestore(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "seccomp")
	for _, tc := range []struct {
		mode  string
		nnp   string
		flags uint32
	}{{"plain", "nnp0", 0}, {"log", "nnp1", 2}} {
		t.Run(tc.mode, func(t *testing.T) {
			t.Parallel()
			p := start(t, bin, tc.mode)
			var r struct {
				Pid int `json:"pid"`
				Tid int `json:"tid"`
				Fd  int `json:"fd"`
			}
			waitReport(t, p, &r)
			keys := []string{"main:EACCES:2:2:" + tc.nnp, "thread:EPERM:2:1:" + tc.nnp, "main-pid:1", "thread-pid:1"}
			requireProgress(t, p, keys...)

			dir := dumpKill(t, p)
			img := show(t, dir).process(t, r.Pid)
			if len(img.Threads) != 2 {
				t.Fatalf("image has %d threads, want 2", len(img.Threads))
			}
			for i, want := range []int{2, 1} {
				th := img.Threads[i]
				if th.SeccompMode != 2 || len(th.SeccompFilters) != want {
					t.Fatalf("image tid %d: seccomp mode %d with %d filters, want mode 2 with %d", th.Tid, th.SeccompMode, len(th.SeccompFilters), want)
				}
				for _, f := range th.SeccompFilters {
					if f.Flags != tc.flags {
						t.Errorf("image tid %d: filter flags %#x, want %#x", th.Tid, f.Flags, tc.flags)
					}
				}
			}

			rp := restoreFrom(t, p, dir)
			requireProgress(t, rp, keys...)
			checkSequence(t, rp, keys...)
		})
	}
}

// TestSeccompStrict round-trips a process with one thread in seccomp
// strict mode, blocked in read(2) on a pipe: the dump (which injects
// syscalls into that thread) must leave it alive, and after restore the
// thread must be in strict mode again (Seccomp: 1 in its status) and still
// work: each byte written into its pipe makes it tick "strict" with
// write(2).
func TestSeccompStrict(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "seccomp"), "strict")
	var r struct {
		Pid int `json:"pid"`
		Tid int `json:"tid"`
		Fd  int `json:"fd"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "alive")
	poke := func(pid int) {
		t.Helper()
		f, err := os.OpenFile(fmt.Sprintf("/proc/%d/fd/%d", pid, r.Fd), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Write([]byte{1}); err != nil {
			t.Fatal(err)
		}
	}
	strictTids := func(pid int) []int {
		t.Helper()
		var out []int
		for _, tid := range tasks(t, pid) {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
			if err != nil {
				t.Fatal(err)
			}
			if statusField(string(b), "Seccomp") == "1" {
				out = append(out, tid)
			}
		}
		return out
	}
	want := strictTids(p.pid)
	if len(want) != 1 {
		t.Fatalf("threads in strict mode before the dump: %v, want one", want)
	}
	poke(p.pid)
	waitTick(t, p, "strict", 1)

	rp := restoreFrom(t, p, dumpKill(t, p))
	if got := strictTids(rp.pid); !slices.Equal(got, want) {
		t.Errorf("threads in strict mode after restore: %v, want %v", got, want)
	}
	poke(rp.pid)
	waitTick(t, rp, "strict", 2)
	requireProgress(t, rp, "alive")
	checkSequence(t, rp, "alive", "strict")
}

// TestSeccompRefused: a filter that hands syscalls to a user-space
// listener (SECCOMP_RET_USER_NOTIF) is refused, naming why, and the process
// keeps running untouched.
func TestSeccompRefused(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "seccomp")
	for _, tc := range []struct{ mode, want string }{
		{"notif", `SECCOMP_RET_USER_NOTIF`},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			t.Parallel()
			p := start(t, bin, tc.mode)
			var r struct {
				Pid int `json:"pid"`
				Tid int `json:"tid"`
				Fd  int `json:"fd"`
			}
			waitReport(t, p, &r)
			requireProgress(t, p, "alive")
			dir := filepath.Join(t.TempDir(), "img")
			_, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(p.pid), "-D", dir)
			requireExit1(t, "dump of a "+tc.mode+" seccomp process", errOut, code, tc.want, `pid `+strconv.Itoa(p.pid))
			if !regexp.MustCompile(`unsupported`).MatchString(errOut) {
				t.Errorf("stderr does not say unsupported:\n%s", errOut)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("the failed dump left %s behind (stat: %v)", dir, err)
			}
			requireProgress(t, p, "alive")
		})
	}
}

// TestSeccompLazy migrates the seccomp program post-copy (dump --lazy /
// restore --lazy-from, here): the filters come back in force and in order,
// and the shared filter's kill on munmap and userfaultfd (both injected by
// the lazy restore, userfaultfd before the filters are installed, munmap
// after) does not fire.
func TestSeccompLazy(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "seccomp"), "plain")
	var r struct {
		Pid int `json:"pid"`
		Tid int `json:"tid"`
		Fd  int `json:"fd"`
	}
	waitReport(t, p, &r)
	keys := []string{"main:EACCES:2:2:nnp0", "thread:EPERM:2:1:nnp0", "main-pid:1", "thread-pid:1"}
	requireProgress(t, p, keys...)
	m := migrateLazy(t, lazyEnv{}, p, nil, nil)
	requireProgress(t, m.restored, keys...)
	checkSequence(t, m.restored, keys...)
}
