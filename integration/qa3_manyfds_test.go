package integration

import (
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// TestQA3ManyFds: a process with about half of lazycr's hard RLIMIT_NOFILE
// in fds (10000 of 20000 on the CI machines) restores when that limit
// cannot be raised (root without CAP_SYS_RESOURCE, as in a container):
// before, the restore made every fd at a temporary number above the highest
// first, needed twice as many and failed ("raise RLIMIT_NOFILE of pid N to
// 20028 ...: operation not permitted") after the dump had killed the
// process. qa3_manyfds checks its fds itself.
func TestQA3ManyFds(t *testing.T) {
	t.Parallel()
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if rl.Max > 65536 {
		t.Skipf("hard RLIMIT_NOFILE %d: a process with half as many fds is too big for a quick test", rl.Max)
	}
	n := int(rl.Max/2) + 64
	file := t.TempDir() + "/data"
	if err := os.WriteFile(file, make([]byte, 64), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startTicking(t, start, "ok", 1, buildC(t, "qa3_manyfds"), strconv.Itoa(n), file)
	rp := restoreFrom(t, p, dumpKill(t, p))
	requireProgress(t, rp, "ok")
	checkSequence(t, rp, "ok")
}
