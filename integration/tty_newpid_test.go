package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// childOf is the first child of pid (its main thread's, /proc/PID/task/
// PID/children), or 0.
func childOf(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(f[0])
	return n
}

// TestTtyShellJobSessionLeaderNewPID (QA2 Q6): ttyjob started in a
// terminal of its own (it leads its session) is restored with
// --shell-job --new-pid as a job of the shell on pty B: its old group id
// cannot be kept, so it leads a new group, numbered by its new pid, in
// the shell's session, and is B's foreground job. Before, TIOCSPGRP
// failed with EPERM (the process had led a new session) after the pid was
// printed. The pid lazycr prints is the one of the running job.
func TestTtyShellJobSessionLeaderNewPID(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	job := buildCached(t, "ttyjob")
	a := openPty(t)
	reports := filepath.Join(dir, "reports")
	c := exec.Command(job, reports, "111", "33")
	done := startOnTerminal(t, a, c)
	a.typeIn(t, "a")
	r := waitTtyReport(t, reports, "a")
	t.Cleanup(func() { syscall.Kill(r.Pid, syscall.SIGKILL) })
	if r.Sid != r.Pid || !r.Fg {
		t.Fatalf("on A: session %d, foreground %v; want pid %d leading its session, in the foreground", r.Sid, r.Fg, r.Pid)
	}
	img := filepath.Join(dir, "img")
	if o, e, code := runLazycr(t, "dump", "--pid", strconv.Itoa(r.Pid), "-D", img); code != 0 {
		t.Fatalf("lazycr dump: exit %d\n%s%s", code, o, e)
	}
	<-done
	b := openPty(t)
	b.setSize(t, 90, 20)
	statusB := filepath.Join(dir, "status-b")
	shB := startJobShell(t, b, statusB, lazycrPath, "restore", "-D", img, "--shell-job", "--new-pid")
	// The job is the child of lazycr restore (a subreaper), the shell's
	// child.
	pid := 0
	deadline := time.Now().Add(lazycrTimeout)
	for pid == 0 {
		if l := childOf(shB.Process.Pid); l != 0 {
			if p := childOf(l); p != 0 {
				if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p)); err == nil && strings.TrimSpace(string(st)) == "ttyjob" {
					pid = p
				}
			}
		}
		if st, _ := os.ReadFile(statusB); time.Now().After(deadline) || strings.Contains(string(st), "exit ") {
			t.Fatalf("no restored ttyjob under the shell on B within %v; shell: %s; terminal:\n%s", lazycrTimeout, st, b.output())
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	waitForeground(t, pid, b, statusB)
	b.typeIn(t, "b")
	r2 := waitTtyReport(t, reports, "b")
	checkOnTerminal(t, r2, b, 90, 20)
	if r2.Pid != pid || r2.Pgrp != pid {
		t.Errorf("the restored job reports pid %d, group %d; want its new pid %d leading its group", r2.Pid, r2.Pgrp, pid)
	}
	if r2.Sid != shB.Process.Pid {
		t.Errorf("the restored job is in session %d, want the session of the shell on B, %d", r2.Sid, shB.Process.Pid)
	}
	// The job's raw mode may be on already: "\n" without "\r".
	if out := b.output(); !regexp.MustCompile(`(^|\n)` + strconv.Itoa(pid) + `\r?\n`).MatchString(out) {
		t.Errorf("lazycr restore did not print the job's pid %d on B:\n%s", pid, out)
	}
	b.typeIn(t, "q")
	if l := waitLine(t, statusB, "exit "); l != "exit 7" {
		t.Errorf("the shell on B saw its job (lazycr restore) end with %q, want exit 7 (the program's status)", l)
	}
}

// TestTtyShellJobLazySessionLeader (QA2 Q6): the same session leader
// migrates lazily on one host (restore --lazy-from --new-pid --shell-job
// on pty B; the frozen original keeps its pid): it runs on B as B's
// foreground job, leading a new group in the shell's session, the pid
// restore prints is its, the source exits 0 and restore exits with the
// job's status. Before, TIOCSPGRP failed with EPERM after the pid was
// printed, and the source released the original.
func TestTtyShellJobLazySessionLeader(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	job := buildCached(t, "ttyjob")
	a := openPty(t)
	reports := filepath.Join(dir, "reports")
	c := exec.Command(job, reports, "111", "33")
	startOnTerminal(t, a, c)
	a.typeIn(t, "a")
	r := waitTtyReport(t, reports, "a")
	if r.Sid != r.Pid {
		t.Fatalf("on A: session %d; want pid %d leading its session", r.Sid, r.Pid)
	}

	src := startLazySource(t, nil, r.Pid, "127.0.0.1")
	b := openPty(t)
	b.setSize(t, 90, 20)
	statusB := filepath.Join(dir, "status-b")
	cmd := lazyCmd(t, nil, "restore", "--lazy-from", src.addr, "--new-pid", "--shell-job")
	// env(1) passes the page server's secret (lazyCmd's LAZYCR_TOKEN).
	shB := startJobShell(t, b, statusB, append([]string{"env", cmd.Env[len(cmd.Env)-1]}, cmd.Args...)...)
	var pid int
	deadline := time.Now().Add(lazycrTimeout)
	for pid == 0 {
		for _, n := range numbersOn(b.output()) {
			if n > 1 {
				pid = n
			}
		}
		if st, _ := os.ReadFile(statusB); time.Now().After(deadline) || strings.Contains(string(st), "exit ") {
			t.Fatalf("no pid on %s within %v; shell: %s; terminal:\n%q", b.path, lazycrTimeout, st, b.output())
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	waitForeground(t, pid, b, statusB)
	b.typeIn(t, "b")
	r2 := waitTtyReport(t, reports, "b")
	checkOnTerminal(t, r2, b, 90, 20)
	if r2.Pid != pid || r2.Sid != shB.Process.Pid {
		t.Errorf("the report comes from pid %d in session %d, want the printed pid %d in the shell's session %d", r2.Pid, r2.Sid, pid, shB.Process.Pid)
	}
	b.waitOutput(t, "got b")
	src.requireExit(t, 0)
	b.typeIn(t, "q")
	if l := waitLine(t, statusB, "exit "); l != "exit 7" {
		t.Errorf("the shell on B saw its job (lazycr restore) end with %q, want exit 7; terminal:\n%q", l, b.output())
	}
}

// TestTtyShellJobRollbackNoPid (QA2 Q6): a --shell-job restore that fails
// once the terminal was handed over (failpoint restore.resume) never
// printed the pid of the process it then killed: restore prints a job's
// pid only once nothing can fail any more.
func TestTtyShellJobRollbackNoPid(t *testing.T) {
	lazycr := failpointLazycr(t)
	dir := t.TempDir()
	job := buildCached(t, "ttyjob")
	a := openPty(t)
	reports := filepath.Join(dir, "reports")
	startJobShell(t, a, filepath.Join(dir, "status-a"), job, reports, "111", "33")
	a.typeIn(t, "a")
	r := waitTtyReport(t, reports, "a")
	t.Cleanup(func() { syscall.Kill(r.Pid, syscall.SIGKILL) })
	img := filepath.Join(dir, "img")
	if o, e, code := runLazycr(t, "dump", "--pid", strconv.Itoa(r.Pid), "-D", img); code != 0 {
		t.Fatalf("lazycr dump: exit %d\n%s%s", code, o, e)
	}
	waitGone(t, r.Pid)
	b := openPty(t)
	statusB := filepath.Join(dir, "status-b")
	startJobShell(t, b, statusB, "env", "LAZYCR_FAILPOINT=restore.resume", lazycr, "restore", "-D", img, "--shell-job")
	if l := waitLine(t, statusB, "exit "); l != "exit 1" {
		t.Errorf("the shell on B saw restore end with %q, want exit 1", l)
	}
	b.waitOutput(t, "injected")
	if slices.Contains(numbersOn(b.output()), r.Pid) {
		t.Errorf("the failed restore printed pid %d:\n%q", r.Pid, b.output())
	}
}
