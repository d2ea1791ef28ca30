package integration

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// memcheckReport is memcheck's first line.
type memcheckReport struct {
	Pid   int    `json:"pid"`
	Heap  hexU64 `json:"heap"`
	Map   hexU64 `json:"map"`
	Stack hexU64 `json:"stack"`
}

// TestDumpRestoreBackToBack: `lazycr dump` (which kills the process) and
// `lazycr restore` of the same pid, run back to back, with a parent that
// reaps its dead child only 300 ms late. dump used to return while the
// killed process was still its parent's zombie, and the restore failed with
// "pid is taken … use --new-pid". dump now waits until the pid is free.
func TestDumpRestoreBackToBack(t *testing.T) {
	t.Parallel()
	parent := buildC(t, "safety_slowparent")
	memcheck := buildC(t, "memcheck")
	for i := range 3 {
		p := start(t, parent, "300", memcheck)
		var r memcheckReport
		waitReport(t, p, &r)
		requireProgress(t, p, "check")

		dir := filepath.Join(t.TempDir(), "img")
		args := []string{"dump", "--pid", strconv.Itoa(r.Pid), "-D", dir}
		if out, errOut, code := runLazycr(t, args...); code != 0 {
			t.Fatalf("round %d: lazycr %s: exit %d\nstdout:\n%s\nstderr:\n%s", i, strings.Join(args, " "), code, out, errOut)
		}
		// No waiting here: restore right away.
		rp := restoreFrom(t, p, dir)
		if rp.pid != r.Pid {
			t.Errorf("round %d: restored with pid %d, want the original %d", i, rp.pid, r.Pid)
		}
		requireProgress(t, rp, "check") // memcheck verifies its heap, mapping and stack each tick
	}
}

// TestDumpZombieNotReaped: the parent never reaps the killed process. dump
// gives up waiting after its bound and warns, naming the pid and the
// parent; restore refuses the taken pid saying it is a zombie of that
// parent, not suggesting --new-pid.
func TestDumpZombieNotReaped(t *testing.T) {
	t.Parallel()
	parent := buildC(t, "safety_slowparent")
	p := start(t, parent, "-1", buildC(t, "memcheck"))
	var r memcheckReport
	waitReport(t, p, &r)
	requireProgress(t, p, "check")

	dir := filepath.Join(t.TempDir(), "img")
	_, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(r.Pid), "-D", dir)
	if code != 0 {
		t.Fatalf("lazycr dump: exit %d\n%s", code, errOut)
	}
	ppid := strconv.Itoa(p.pid)
	for _, want := range []string{"still a zombie", "parent pid " + ppid, "safety_slowpare"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("dump's output does not say %q:\n%s", want, errOut)
		}
	}
	if s := procState(r.Pid); s != "Z" {
		t.Fatalf("pid %d is in state %q after the dump, want a zombie", r.Pid, s)
	}
	_, errOut, code = runLazycr(t, "restore", "-D", dir)
	requireExit1(t, "restore over a zombie's pid", errOut, code, "pid is taken", "zombie", "parent pid "+ppid, "has not reaped")
	if strings.Contains(errOut, "use --new-pid") {
		t.Errorf("restore suggests --new-pid for a zombie:\n%s", errOut)
	}
}

// TestDumpChildOfCaller: a harness (here python's subprocess) starts the
// process and runs `lazycr dump` on it, blocked in waitpid on lazycr: it
// cannot reap the killed process before lazycr exits. dump says so after
// a short grace (not after the full reap bound, a deadlock broken by a
// timeout), and the process's frozen time ends at the kill.
func TestDumpChildOfCaller(t *testing.T) {
	t.Parallel()
	needRoot(t)
	if lazycrErr != nil {
		t.Fatal(lazycrErr)
	}
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3 on this machine")
	}
	dir := filepath.Join(t.TempDir(), "img")
	script := `import subprocess, sys
p = subprocess.Popen(["sleep", "100"])
r = subprocess.run([sys.argv[1], "dump", "--pid", str(p.pid), "-D", sys.argv[2]], capture_output=True)
sys.stdout.write("%d %d\n" % (r.returncode, p.pid))
sys.stderr.write(r.stderr.decode())
p.wait()
`
	ctx, cancel := context.WithTimeout(context.Background(), lazycrTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, py, "-c", script, lazycrPath, dir)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("harness: %v\n%s", err, stderr.String())
	}
	if !strings.HasPrefix(stdout.String(), "0 ") {
		t.Fatalf("lazycr dump in the harness: %q\n%s", stdout.String(), stderr.String())
	}
	if !strings.Contains(stderr.String(), "which runs lazycr") || strings.Contains(stderr.String(), "has not reaped") {
		t.Errorf("dump's output does not say the parent runs lazycr (and reaps after it):\n%s", stderr.String())
	}
}
