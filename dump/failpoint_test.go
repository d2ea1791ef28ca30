//go:build failpoint

package dump

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lazycr/lazycr/internal/failpoint"
	"github.com/lazycr/lazycr/internal/leakcheck"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

// dumpSteps are the failpoints of a dump, in order.
var dumpSteps = []string{
	"dump.precheck", "dump.freeze", "dump.memory", "dump.process", "dump.fds",
	"dump.pages", "dump.images", "dump.done",
}

// untouched fails t unless pid runs (or sleeps) untraced, not stopped,
// with the given mappings.
func untouched(t *testing.T, pid int, maps string) {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "TracerPid:"); ok && strings.TrimSpace(v) != "0" {
			t.Errorf("pid %d still traced by %s", pid, strings.TrimSpace(v))
		}
		if v, ok := strings.CutPrefix(l, "State:"); ok && strings.ContainsAny(strings.TrimSpace(v)[:1], "tTZX") {
			t.Errorf("pid %d in state %s, want running or sleeping", pid, strings.TrimSpace(v))
		}
	}
	if got, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid)); err != nil || string(got) != maps {
		t.Errorf("mappings of pid %d changed (%v):\n%s\nbefore:\n%s", pid, err, got, maps)
	}
}

// TestFailpointsInProcess fails each step of a dump in turn, plain and
// lazy, inside this process: the process must be released untouched, no
// image directory left, and no goroutine or fd of ours leaked.
func TestFailpointsInProcess(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("dumping a process needs root (ptrace)")
	}
	cmd := exec.Command("/bin/sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	pid := cmd.Process.Pid
	// Wait until sleep sleeps (clock_nanosleep, syscall 230 on x86-64): its
	// mappings are final then.
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", pid))
		if strings.HasPrefix(string(b), "230 ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d does not reach clock_nanosleep: %q", pid, b)
		}
		time.Sleep(time.Millisecond) // poll interval
	}
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(zerolog.NewTestWriter(t))
	for _, lazy := range []bool{false, true} {
		for _, step := range dumpSteps {
			if lazy && step == "dump.done" {
				continue
			}
			name := step
			if lazy {
				name = "lazy/" + step
			}
			t.Run(name, func(t *testing.T) {
				defer failpoint.Set(failpoint.Set(step))
				fds := leakcheck.Fds()
				ignore := goleak.IgnoreCurrent()
				dir := filepath.Join(t.TempDir(), "img")
				if lazy {
					cp, ferr := Freeze(context.Background(), Options{PID: pid, Mode: ModeLazy, Log: log})
					err = ferr
					if err == nil {
						_, err = cp.ImageFiles(dir)
						if rerr := cp.Release(); rerr != nil {
							t.Errorf("release: %v", rerr)
						}
					}
				} else {
					_, err = Dump(context.Background(), Options{PID: pid, Dir: dir, Mode: ModeKill, Log: log})
				}
				if !errors.Is(err, failpoint.ErrInjected) {
					t.Fatalf("dump with failpoint %s: %v, want ErrInjected", step, err)
				}
				if _, err := os.Stat(dir); !os.IsNotExist(err) {
					t.Errorf("failed dump left %s (stat: %v)", dir, err)
				}
				untouched(t, pid, string(maps))
				if err := goleak.Find(ignore); err != nil {
					t.Errorf("goroutines left: %v", err)
				}
				if got := leakcheck.Fds(); !slices.Equal(got, fds) {
					t.Errorf("fds after the failed dump: %v, before %v", got, fds)
				}
			})
		}
	}
}
