package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// startTail runs `tail -n +1 -f FILE` (GNU tail follows with inotify) on a
// file that holds a report line and "tick tail 1"; the test appends the
// later ticks, and tail's stdout is the harness's output file.
func startTail(t *testing.T, env lazyEnv) (*proc, string) {
	t.Helper()
	bin, err := exec.LookPath("tail")
	if err != nil {
		t.Skip("tail not found")
	}
	path := filepath.Join(t.TempDir(), "followed")
	if err := os.WriteFile(path, []byte("{\"tail\":\"followed\"}\ntick tail 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := env.startProg(t, bin, "-n", "+1", "-f", path)
	var r struct {
		Tail string `json:"tail"`
	}
	waitReport(t, p, &r)
	waitTick(t, p, "tail", 1)
	return p, path
}

// appendTick appends "tick tail N" to the followed file.
func appendTick(t *testing.T, path string, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "tick tail %d\n", n); err != nil {
		t.Fatal(err)
	}
}

// TestFilesTailFollow: `tail -f FILE` keeps following after a plain dump
// and restore: lines appended after the restore are printed, once each.
func TestFilesTailFollow(t *testing.T) {
	t.Parallel()
	p, path := startTail(t, lazyEnv{})
	appendTick(t, path, 2)
	waitTick(t, p, "tail", 2)
	rp := restoreFrom(t, p, dumpKill(t, p))
	for n := 3; n <= 5; n++ {
		appendTick(t, path, n)
		waitTick(t, rp, "tail", uint64(n))
	}
	checkSequence(t, rp, "tail")
}

// TestFilesTailFollowLazy: the same, migrated with dump --lazy / restore
// --lazy-from between two namespace hosts.
func TestFilesTailFollowLazy(t *testing.T) {
	t.Parallel()
	env := lazyTwoHosts(t)
	p, path := startTail(t, env)
	m := migrateLazy(t, env, p, nil, nil)
	for n := 2; n <= 4; n++ {
		appendTick(t, path, n)
		waitTick(t, m.restored, "tail", uint64(n))
	}
	checkSequence(t, m.restored, "tail")
}
