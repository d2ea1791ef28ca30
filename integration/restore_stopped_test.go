package integration

import (
	"fmt"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// waitAllStopped polls until every thread of pid is in a job-control stop
// (state T, not traced) or fails the test at the deadline.
func waitAllStopped(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(progressTimeout)
	for {
		all, states := true, ""
		for _, tid := range tasks(t, pid) {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
			if err != nil {
				t.Fatalf("read stat of pid %d tid %d: %v", pid, tid, err)
			}
			s := statState(string(b))
			states += fmt.Sprintf(" %d:%s", tid, s)
			all = all && s == "T"
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d is not stopped (state T) in every thread:%s", pid, states)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}

// stoppedThreadcheck starts threadcheck, waits until every thread ticks,
// stops it with SIGSTOP and waits until it is in state T.
func stoppedThreadcheck(t *testing.T, env lazyEnv) (*proc, []string) {
	t.Helper()
	p := env.startProg(t, buildC(t, "threadcheck"))
	var r struct {
		Pid     int `json:"pid"`
		Threads int `json:"threads"`
	}
	waitReport(t, p, &r)
	keys := values(waitThreadKeys(t, p, p.pid))
	requireProgress(t, p, keys...)
	if err := unix.Kill(p.pid, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitAllStopped(t, p.pid)
	return p, keys
}

// requireStoppedThenContinue checks that the restored process is stopped
// in every thread, makes no progress while stopped, and runs on after a
// SIGCONT with each thread ticking (keys nil: a new pid, the keys are read
// again).
func requireStoppedThenContinue(t *testing.T, rp *proc, keys []string) {
	t.Helper()
	waitAllStopped(t, rp.pid)
	before := progress(t, rp)
	waitAllStopped(t, rp.pid) // still: nothing resumed it
	after := progress(t, rp)
	for k, v := range after {
		if v != before[k] {
			t.Errorf("key %s advanced from %d to %d while the process is stopped", k, before[k], v)
		}
	}
	if err := unix.Kill(rp.pid, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if keys == nil {
		keys = values(waitThreadKeys(t, rp, rp.pid))
	}
	requireProgress(t, rp, keys...)
	requireRunning(t, rp.pid)
}

// TestRestoreStopped (F5): a process in a job-control stop (state T) comes
// back stopped, every thread, not traced, and runs on after SIGCONT.
func TestRestoreStopped(t *testing.T) {
	t.Parallel()
	p, keys := stoppedThreadcheck(t, lazyEnv{})
	rp := restoreFrom(t, p, dumpKill(t, p))
	requireStoppedThenContinue(t, rp, keys)
}

// TestRestoreStoppedLazy: the same through dump --lazy / restore
// --lazy-from.
func TestRestoreStoppedLazy(t *testing.T) {
	t.Parallel()
	env := lazyTwoHosts(t)
	p, keys := stoppedThreadcheck(t, env)
	_ = keys // they hold the original pid; the copy has a new one
	m := migrateLazy(t, env, p, nil, nil)
	requireStoppedThenContinue(t, m.restored, nil)
}
