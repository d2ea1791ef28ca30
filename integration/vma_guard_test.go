package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/lazycr/lazycr/probe"
	"github.com/lazycr/lazycr/vmattr"
)

// Guard pages (madvise MADV_GUARD_INSTALL, Linux 6.13): guardcheck installs
// them in anonymous and file mappings and keeps checking that every access
// to one raises SIGSEGV, that the pagemap shows it, and that its neighbours
// keep their data. Before lazycr knew them, the dump took a guard page for
// a swapped-out page and failed reading it (EIO); a restore that dropped
// them would read zeros where the process expects a fault.

// needGuardPages skips on a kernel without MADV_GUARD_INSTALL.
func needGuardPages(t *testing.T) {
	t.Helper()
	if s, r := probe.GuardRegions(); s == vmattr.GuardNone {
		t.Skipf("no guard pages on this kernel: %s", r.Detail)
	}
}

func startGuardcheck(t *testing.T, bin string, startProg func(*testing.T, string, ...string) *proc, args ...string) *proc {
	t.Helper()
	needGuardPages(t)
	p := startProg(t, bin, append([]string{t.TempDir()}, args...)...)
	var r struct {
		Pid int `json:"pid"`
	}
	waitReport(t, p, &r)
	waitTick(t, p, "ok", 2)
	return p
}

func TestVMAGuardRestore(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "guardcheck")
	for _, tc := range []struct {
		name string
		args []string
	}{{"plain", nil}, {"mlockall", []string{"lock"}}} {
		t.Run(tc.name, func(t *testing.T) {
			p := startGuardcheck(t, bin, start, tc.args...)
			dir := dumpKill(t, p)
			out, errOut, code := runLazycr(t, "show", dir)
			if code != 0 {
				t.Fatalf("lazycr show: exit %d: %s", code, errOut)
			}
			// anon: 4 guard pages; hole: 1; priv: 2; shared: 1.
			for _, n := range []string{"4", "1", "2"} {
				if !regexp.MustCompile(`guard=` + n + `\b`).MatchString(out) {
					t.Errorf("lazycr show lacks guard=%s:\n%s", n, out)
				}
			}
			rp := restoreFrom(t, p, dir)
			requireProgress(t, rp, "ok")
			checkSequence(t, rp, "ok")
		})
	}
}

// TestVMAGuardLazy: after a post-copy migration a guard page still faults
// SIGSEGV, while its neighbours come from the page server, and still does
// once every page is in (the background push never fills a guard page).
func TestVMAGuardLazy(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "guardcheck")
	env := lazyEnv{}
	for _, tc := range []struct {
		name string
		args []string
	}{{"plain", nil}, {"mlockall", []string{"lock"}}} {
		t.Run(tc.name, func(t *testing.T) {
			p := startGuardcheck(t, bin, env.startProg, tc.args...)
			m := migrateLazy(t, env, p, nil, nil)
			requireProgress(t, m.restored, "ok")
			checkSequence(t, m.restored, "ok")
		})
	}
}

// TestVMAGuardSharedRefused: a guard page in a shared anonymous mapping
// hides the object's page under it; the dump names the VMA and the process
// keeps running.
func TestVMAGuardSharedRefused(t *testing.T) {
	t.Parallel()
	p := startGuardcheck(t, buildC(t, "guardcheck"), start, "shmanon")
	dir := filepath.Join(t.TempDir(), "img")
	_, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(p.pid), "-D", dir)
	requireExit1(t, "dump of a guard page in shared memory", errOut, code,
		`vma 0x[0-9a-f]+-0x[0-9a-f]+ /dev/zero \(deleted\): unsupported: cannot be restored exactly: guard page at 0x[0-9a-f]+ in a shared memory mapping`)
	requireProgress(t, p, "ok")
	if _, err := os.Stat(filepath.Join(dir, "inventory.img")); err == nil {
		t.Errorf("a refused dump left an image in %s", dir)
	}
}
