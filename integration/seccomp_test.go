package integration

import (
	"os"
	"path/filepath"
	"regexp"
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

// TestSeccompRefused: a thread in seccomp strict mode, and a filter that
// hands syscalls to a user-space listener (SECCOMP_RET_USER_NOTIF), are
// refused, naming why, and the process keeps running untouched.
func TestSeccompRefused(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "seccomp")
	for _, tc := range []struct{ mode, want string }{
		{"strict", `seccomp strict mode`},
		{"notif", `SECCOMP_RET_USER_NOTIF`},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			t.Parallel()
			p := start(t, bin, tc.mode)
			var r struct {
				Pid int `json:"pid"`
				Tid int `json:"tid"`
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
	}
	waitReport(t, p, &r)
	keys := []string{"main:EACCES:2:2:nnp0", "thread:EPERM:2:1:nnp0", "main-pid:1", "thread-pid:1"}
	requireProgress(t, p, keys...)
	m := migrateLazy(t, lazyEnv{}, p, nil, nil)
	requireProgress(t, m.restored, keys...)
	checkSequence(t, m.restored, keys...)
}
