package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestShmPythonPool dumps a python multiprocessing.Pool in the middle of
// its map (two workers; a multiprocessing.Value in an unlinked /dev/shm
// arena kept open and mapped, its lock a named semaphore unlinked at
// once; the pool's pipes and threads) and restores it: the map must go on
// from where it was, every result right, and end with the right sum and
// count (the program checks).
func TestShmPythonPool(t *testing.T) {
	t.Parallel()
	needRoot(t)
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		if py, err = exec.LookPath("python3"); err != nil {
			t.Skip("no python3 on this machine")
		}
	}
	script, err := filepath.Abs(filepath.Join("testdata", "progs", "mppool.py"))
	if err != nil {
		t.Fatal(err)
	}
	p := start(t, py, "-u", script)
	var r struct {
		Pid int `json:"pid"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "map")
	members := descendants(t, p.pid)
	t.Cleanup(func() {
		for _, pid := range members {
			unix.Kill(pid, unix.SIGKILL)
		}
	})

	dir := dumpKill(t, p)
	for _, pid := range members {
		waitGone(t, pid)
	}
	rp := restoreFrom(t, p, dir)
	frozen := rp.ticks["map"]
	deadline := time.Now().Add(2 * progressTimeout)
	for progress(t, rp)["done"] == 0 {
		if rp.exited() || time.Now().After(deadline) {
			t.Fatalf("the pool did not finish its map (at %d, frozen at %d); stderr:\n%s", progress(t, rp)["map"], frozen, rp.stderr())
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	checkSequence(t, rp, "map")
	if s := rp.stderr(); s != "" {
		t.Errorf("the pool complains:\n%s", s)
	}
	t.Logf("map frozen at %d of 300", frozen)
}
