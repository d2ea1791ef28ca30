package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Fault injection: lazycr built with -tags failpoint fails the step named
// by LAZYCR_FAILPOINT and logs every step it passes to LAZYCR_FAILPOINT_LOG
// (package internal/failpoint). Each test first runs an operation with the
// log to learn its steps, then fails each of them in turn.

var (
	fpOnce sync.Once
	fpPath string
	fpErr  error
)

// failpointLazycr builds lazycr with -tags failpoint, once.
func failpointLazycr(t *testing.T) string {
	t.Helper()
	needRoot(t)
	fpOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		out := filepath.Join(binDir, "lazycr-failpoint")
		cmd := exec.CommandContext(ctx, "go", "build", "-tags", "failpoint", "-o", out, "github.com/lazycr/lazycr/cmd/lazycr")
		if b, err := cmd.CombinedOutput(); err != nil {
			fpErr = fmt.Errorf("build lazycr -tags failpoint: %w\n%s", err, b)
			return
		}
		fpPath = out
	})
	if fpErr != nil {
		t.Fatal(fpErr)
	}
	return fpPath
}

// runFailpoint runs bin with args and the failpoint environment (fail, when
// not empty; log the steps to logFile, when not empty).
func runFailpoint(t *testing.T, bin, fail, logFile string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), lazycrTimeout)
	defer cancel()
	var o, e bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "LAZYCR_FAILPOINT="+fail, "LAZYCR_FAILPOINT_LOG="+logFile)
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %s (failpoint %q): still running after %v; stderr:\n%s", bin, strings.Join(args, " "), fail, lazycrTimeout, e.String())
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("run %s: %v", bin, err)
	}
	return o.String(), e.String(), code
}

// failpointSteps reads the steps a run logged, in order, each once.
func failpointSteps(t *testing.T, logFile, prefix string) []string {
	t.Helper()
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	for _, s := range strings.Fields(string(b)) {
		if strings.HasPrefix(s, prefix) && !slices.Contains(steps, s) {
			steps = append(steps, s)
		}
	}
	return steps
}

func readMaps(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestFailpointsDump makes each step of a dump fail in turn, for a plain
// dump (which would kill the process) and a lazy one, and checks that the
// process is intact — running, untraced, its own memory check passing, the
// same fds and mappings (no scratch page left) — and that no image
// directory is left behind.
func TestFailpointsDump(t *testing.T) {
	t.Parallel()
	lazycr := failpointLazycr(t)
	p := start(t, buildC(t, "memcheck"))
	var r memcheckReport
	waitReport(t, p, &r)
	requireProgress(t, p, "check")
	pid := strconv.Itoa(p.pid)

	logFile := filepath.Join(t.TempDir(), "steps")
	dir := filepath.Join(t.TempDir(), "probe")
	if _, e, code := runFailpoint(t, lazycr, "", logFile, "dump", "--pid", pid, "-D", dir, "--leave-running"); code != 0 {
		t.Fatalf("dump --leave-running: exit %d\n%s", code, e)
	}
	steps := failpointSteps(t, logFile, "dump.")
	for _, want := range []string{"dump.precheck", "dump.freeze", "dump.memory", "dump.process", "dump.fds", "dump.pages", "dump.images", "dump.done"} {
		if !slices.Contains(steps, want) {
			t.Errorf("dump did not pass failpoint %s (it passed %v)", want, steps)
		}
	}
	requireProgress(t, p, "check")

	fds, maps := procFds(t, p.pid), readMaps(t, p.pid)
	for _, mode := range []string{"kill", "lazy"} {
		for _, step := range steps {
			if mode == "lazy" && step == "dump.done" {
				continue // a lazy dump ends by serving, not by this step
			}
			t.Run(mode+"/"+step, func(t *testing.T) {
				dir := filepath.Join(t.TempDir(), "img")
				args := []string{"dump", "--pid", pid, "-D", dir}
				if mode == "lazy" {
					args = append(args, "--lazy", "--address", "127.0.0.1", "--port", "0")
				}
				_, errOut, code := runFailpoint(t, lazycr, step, "", args...)
				requireExit1(t, "dump with failpoint "+step, errOut, code, "injected failure", "failpoint "+step)
				if _, err := os.Stat(dir); !os.IsNotExist(err) {
					t.Errorf("failed dump left %s behind (stat: %v)", dir, err)
				}
				requireProgress(t, p, "check") // running, untraced, memory verified
				if got := procFds(t, p.pid); !equalFds(got, fds) {
					t.Errorf("fds of pid %d after the failed dump: %v, before %v", p.pid, got, fds)
				}
				if got := readMaps(t, p.pid); got != maps {
					t.Errorf("mappings of pid %d changed across the failed dump:\n%s\nbefore:\n%s", p.pid, got, maps)
				}
			})
		}
	}
	checkSequence(t, p, "check")
}

// TestFailpointsRestore makes each step of a restore fail in turn. Each
// failed restore runs under a subreaper that reaps whatever it orphans, and
// must exit without leaving a process behind (the reaper would wait for
// it), with the pid free again and the image directory untouched; at the
// end a restore without failpoint brings the process back, its memory
// check passing.
func TestFailpointsRestore(t *testing.T) {
	t.Parallel()
	// A copy of its own, so that its processes are told apart from those
	// of the other tests.
	lazycr := filepath.Join(t.TempDir(), "lazycr-restore")
	if b, err := os.ReadFile(failpointLazycr(t)); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(lazycr, b, 0o700); err != nil {
		t.Fatal(err)
	}
	reaper := buildC(t, "safety_reaper")
	p := start(t, buildC(t, "memcheck"))
	var r memcheckReport
	waitReport(t, p, &r)
	requireProgress(t, p, "check")
	dir := dumpKill(t, p)
	before := dirListing(t, dir)

	// Learn the steps with a restore under a new pid, then drop it.
	logFile := filepath.Join(t.TempDir(), "steps")
	out, e, code := runFailpoint(t, lazycr, "", logFile, "restore", "-D", dir, "--new-pid")
	if code != 0 {
		t.Fatalf("restore --new-pid: exit %d\n%s", code, e)
	}
	if probe, err := strconv.Atoi(strings.TrimSpace(out)); err == nil {
		adopt(t, probe) // killed at the end of the test
	}
	steps := failpointSteps(t, logFile, "restore.")
	for _, want := range []string{"restore.load", "restore.stub", "restore.mm", "restore.pages", "restore.fds", "restore.state", "restore.threads", "restore.seccomp", "restore.creds", "restore.resume"} {
		if !slices.Contains(steps, want) {
			t.Errorf("restore did not pass failpoint %s (it passed %v)", want, steps)
		}
	}

	for _, step := range steps {
		t.Run(step, func(t *testing.T) {
			out, errOut, code := runFailpoint(t, reaper, step, "", lazycr, "restore", "-D", dir)
			requireExit1(t, "restore with failpoint "+step, errOut, code, "injected failure", "failpoint "+step)
			if out != "" {
				t.Errorf("failed restore printed %q on stdout", out)
			}
			// The reaper has reaped everything lazycr left: the pid is free.
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.pid)); !os.IsNotExist(err) {
				t.Errorf("pid %d still exists after the failed restore (state %s)", p.pid, procState(p.pid))
			}
			if got := procsRunning(t, lazycr); len(got) > 0 {
				t.Errorf("lazycr processes (stubs) left: %v", got)
			}
			if got := dirListing(t, dir); !slices.Equal(got, before) {
				t.Errorf("image directory changed: %v, before %v", got, before)
			}
		})
	}

	rp := restoreFrom(t, p, dir)
	requireProgress(t, rp, "check")
}

// dirListing lists dir's files with their sizes.
func dirListing(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s:%d", e.Name(), info.Size()))
	}
	return out
}

// TestFailpointsInProcess runs the in-process fault-injection tests of
// dump, restore and failpoint, which exist only in builds with -tags
// failpoint, so that every run of the integration tests runs them too:
// each dump and restore step fails in turn inside the test process, which
// then checks that no goroutine, fd, child process or image directory was
// left and that the process or pid is as before.
func TestFailpointsInProcess(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout+lazycrTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "test", "-tags", "failpoint", "-count=1", "-run", "TestFailpointsInProcess|TestSet",
		"github.com/lazycr/lazycr/dump", "github.com/lazycr/lazycr/restore", "github.com/lazycr/lazycr/internal/failpoint")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go test -tags failpoint: %v\n%s", err, out)
	}
	for _, pkg := range []string{"lazycr/dump", "lazycr/restore", "lazycr/internal/failpoint"} {
		if !regexp.MustCompile(`(?m)^ok\s+\S*` + regexp.QuoteMeta(pkg) + `\s`).Match(out) {
			t.Errorf("go test -tags failpoint: no ok line for %s\n%s", pkg, out)
		}
	}
	if bytes.Contains(out, []byte("no tests to run")) {
		t.Errorf("go test -tags failpoint ran no test somewhere:\n%s", out)
	}
}

// TestRestoreRetryAfterFailure: a restore that fails once the process has
// its pid, run as users run it (no subreaper: the killed half-built process
// is left to PID 1 to reap), must not leave the pid taken for the retry
// that follows at once. It used to: the retry was refused with "pid is
// taken" by the failed attempt's zombie.
func TestRestoreRetryAfterFailure(t *testing.T) {
	t.Parallel()
	lazycr := failpointLazycr(t)
	p := start(t, buildC(t, "memcheck"))
	var r memcheckReport
	waitReport(t, p, &r)
	requireProgress(t, p, "check")
	dir := dumpKill(t, p)

	for _, step := range []string{"restore.mm", "restore.resume"} {
		_, errOut, code := runFailpoint(t, lazycr, step, "", "restore", "-D", dir)
		requireExit1(t, "restore with failpoint "+step, errOut, code, "injected failure")
		// At once: the pid must be free, so this one gets as far as its
		// failpoint, which lies past taking the pid.
		_, errOut, code = runFailpoint(t, lazycr, "restore.stub", "", "restore", "-D", dir)
		requireExit1(t, "restore right after a failure", errOut, code, "failpoint restore.stub")
	}
	rp := restoreFrom(t, p, dir)
	if rp.pid != p.pid {
		t.Errorf("restored with pid %d, want the original %d", rp.pid, p.pid)
	}
	requireProgress(t, rp, "check")
}
