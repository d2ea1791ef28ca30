//go:build failpoint

package restore

import (
	"context"
	"errors"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/lazycr/lazycr/internal/failpoint"
	"github.com/lazycr/lazycr/internal/leakcheck"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// restoreSteps are the failpoints of Build and Resume, in order.
var restoreSteps = []string{
	"restore.load", "restore.stub", "restore.mm", "restore.pages", "restore.fds",
	"restore.state", "restore.threads", "restore.seccomp", "restore.creds", "restore.resume",
}

// TestFailpointsInProcess fails each step of Build (and Resume) in turn,
// inside this process, with the original pid: nothing may be left — no
// child, no goroutine (the tracer thread), no fd — and the pid must be free
// for the next attempt. The test process is a child subreaper meanwhile, so
// the half-built process, orphaned when its stub is killed, is reaped here
// rather than by a slow PID 1.
func TestFailpointsInProcess(t *testing.T) {
	dir, cmd := dumpSleep(t)
	pid := cmd.Process.Pid
	cmd.Process.Kill()
	cmd.Wait()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	log := zerolog.New(zerolog.NewTestWriter(t))
	// Lazy: with a userfaultfd, whose fd must be closed too.
	lazySteps := append(slices.Clone(restoreSteps[:7]), "restore.uffd", "restore.seccomp", "restore.creds", "restore.resume")
	for _, c := range []struct {
		lazy  bool
		steps []string
	}{{false, restoreSteps}, {true, lazySteps}} {
		for _, step := range c.steps {
			name := step
			if c.lazy {
				name = "lazy/" + step
			}
			t.Run(name, func(t *testing.T) { failBuild(t, dir, pid, step, c.lazy, log) })
		}
	}
	// Nothing failed: the restore goes through.
	r, err := Restore(context.Background(), Options{Dir: dir, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if r.PID() != pid {
		t.Errorf("restored with pid %d, want %d", r.PID(), pid)
	}
	unixKill(r.PID())
	var ws unix.WaitStatus
	unix.Wait4(r.PID(), &ws, 0, nil) // our child: we are its subreaper
}

// failBuild restores from dir with failpoint step set and checks that the
// failure left nothing behind.
func failBuild(t *testing.T, dir string, pid int, step string, lazy bool, log zerolog.Logger) {
	defer failpoint.Set(failpoint.Set(step))
	children, fds := ourChildren(t), leakcheck.Fds()
	ignore := goleak.IgnoreCurrent()
	r, err := Build(context.Background(), Options{Dir: dir, Lazy: lazy, Log: log})
	if err == nil {
		err = r.Resume()
	}
	if !errors.Is(err, failpoint.ErrInjected) {
		if err == nil {
			unixKill(r.PID())
		}
		t.Fatalf("restore with failpoint %s: %v, want ErrInjected", step, err)
	}
	requireNothingLeft(t, children, fds, ignore)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still taken after the failed restore", pid)
		}
		time.Sleep(time.Millisecond) // poll interval
	}
}
