package integration

import (
	"fmt"
	"regexp"
	"strconv"
	"testing"
)

// TestNewPIDErrorNamesBothPIDs: a restore --new-pid that fails after the
// process got its new pid names both, the image's and this host's: the
// old pid alone points at the original (still running here), not at the
// process that failed.
func TestNewPIDErrorNamesBothPIDs(t *testing.T) {
	t.Parallel()
	lazycr := failpointLazycr(t)
	p := start(t, buildC(t, "memcheck"))
	var r memcheckReport
	waitReport(t, p, &r)
	requireProgress(t, p, "check")
	dir := t.TempDir() + "/img"
	if _, e, code := runLazycr(t, "dump", "--pid", strconv.Itoa(p.pid), "-D", dir, "--leave-running"); code != 0 {
		t.Fatalf("dump --leave-running: exit %d\n%s", code, e)
	}
	// The original keeps its pid: --new-pid must take another one.
	_, e, code := runFailpoint(t, lazycr, "restore.fds", "", "restore", "-D", dir, "--new-pid")
	if code != 1 {
		t.Fatalf("restore --new-pid with failpoint restore.fds: exit %d, want 1\n%s", code, e)
	}
	re := regexp.MustCompile(fmt.Sprintf(`restore pid %d \(pid (\d+) on this host\): restore fds: `, p.pid))
	m := re.FindStringSubmatch(e)
	if m == nil {
		t.Fatalf("restore --new-pid error does not name the new pid next to %d:\n%s", p.pid, e)
	}
	if m[1] == strconv.Itoa(p.pid) {
		t.Fatalf("the new pid is the old one: %s", m[0])
	}
	requireProgress(t, p, "check") // the original runs on
}
