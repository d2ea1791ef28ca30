package integration

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestLazyTreeMembersServed migrates testdata/progs/lazytree (root, two
// children, a grandchild; 16, 24, 32 and 16 MiB of memory of their own,
// the same addresses holding different bytes in each) lazily from host b
// to host c, the root being the init of its own PID namespace (restore
// --pidns). Every member's memory must come from the one page server: the
// target copies more than the members' 88 MiB (with only the root lazy it
// would copy about 16 MiB), and every member keeps verifying all of its
// memory (two whole rounds after the migration) without a wrong byte. c2
// forks a checker child after every 4 MiB it verifies, so some are forked
// while its memory is still being fetched (the target logs each fork it
// serves): each must find c2's memory intact.
func TestLazyTreeMembersServed(t *testing.T) {
	t.Parallel()
	env := lazyTwoHosts(t)
	cmd := env.src.Command(context.Background(), buildC(t, "lazytree"), "16")
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID}
	p := startCmd(t, cmd)
	var r struct {
		Pid int `json:"pid"`
		C1  int `json:"c1"`
		C2  int `json:"c2"`
		G   int `json:"g"`
	}
	waitReport(t, p, &r)
	keys := []string{"root:ok", "c1:ok", "c2:ok", "g:ok", "fork:ok"}
	requireProgress(t, p, keys...)
	rp, dst := migrateLazyPIDNS(t, env, p, "--log-level", "debug", "--log-format", "json")
	if n := len(descendants(t, rp.pid)); n < 3 {
		t.Errorf("the restored root has %d descendants, want at least 3", n)
	}
	// Two rounds: the second verifies every byte after the migration.
	requireProgress(t, rp, keys...)
	requireProgress(t, rp, keys...)
	if s := rp.stderr(); s != "" {
		t.Errorf("the tree complains:\n%s", s)
	}
	_, e := dst.output()
	forks := 0
	var summary []string
	for _, l := range strings.Split(e, "\n") {
		var m struct {
			Message string `json:"message"`
		}
		if json.Unmarshal([]byte(l), &m) != nil {
			summary = append(summary, l) // the summary is plain text
			continue
		}
		if m.Message == "process forked: serving the child's uffd" {
			forks++
		}
	}
	s := parseLazySummary(t, strings.Join(summary, "\n"))
	if s.bytesCopied < 88<<20 {
		t.Errorf("the target copied %d bytes lazily, want at least the members' 88 MiB", s.bytesCopied)
	}
	if forks == 0 {
		t.Errorf("no fork while pages were missing: the test did not test that (c2 forks after every 4 MiB it verified)")
	}
	t.Logf("lazy phase: %d bytes copied, %d forks served while pages were missing; freeze to resume %v", s.bytesCopied, forks, s.freezeToResume)
}

// TestLazyTreeShellLoop migrates `bash -c 'i=0; while true; do sleep 0.2;
// echo $((i++)); done'` (the init of its own PID namespace) lazily from
// host b to host c: bash and its `sleep` child (usually mid-run, or just
// exited and not reaped) are served by one page server, and the count must
// carry on in the same file with no number missing or repeated.
func TestLazyTreeShellLoop(t *testing.T) {
	t.Parallel()
	env := lazyTwoHosts(t)
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash not found")
	}
	out := filepath.Join(t.TempDir(), "count")
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := env.src.Command(context.Background(), bash, "-c", "i=0; while true; do sleep 0.2; echo $((i++)); done")
	cmd.Stdout = f
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	waitCount(t, out, 2)

	src := startLazySource(t, env.src, cmd.Process.Pid, env.listenHost())
	args := []string{"restore", "--lazy-from", src.addr, "--pidns"}
	dst := startLazyRun(t, "target lazycr "+strings.Join(args, " "), lazyCmd(t, env.dst, args...))
	rpid := lazyResumedPID(t, dst)
	t.Cleanup(func() { unix.Kill(rpid, unix.SIGKILL) })
	dst.requireExit(t, 0)
	src.requireExit(t, 0)
	<-done
	n := len(readCount(t, out))
	waitCount(t, out, n+3)
	got := readCount(t, out)
	for i, v := range got {
		if v != i {
			t.Fatalf("count %v: line %d is %d", got, i, v)
		}
	}
	_, e := dst.output()
	t.Logf("target summary:\n%s", e)
}

// TestLazyTreeSourceKilled kills the source lazycr (SIGKILL) while it
// serves a frozen tree: every member, not only the root, must stay stopped
// (state T, untraced, using no CPU), since in a lazy migration each
// member's memory is served from its frozen original and a copy may run on
// the target.
func TestLazyTreeSourceKilled(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "lazytree"), "4")
	var r struct {
		Pid int `json:"pid"`
		C1  int `json:"c1"`
		C2  int `json:"c2"`
		G   int `json:"g"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "root:ok", "c1:ok", "c2:ok", "g:ok")
	src := startLazySource(t, nil, p.pid, "127.0.0.1")
	members := descendants(t, p.pid)
	t.Cleanup(func() {
		for _, m := range members {
			unix.Kill(m, unix.SIGKILL)
		}
	})
	if err := src.cmd.Process.Signal(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-src.done
	live := 0
	for _, pid := range append([]int{p.pid}, members...) {
		// A short-lived child of c2 that had exited when the tree was
		// frozen stays a zombie: its frozen parent cannot reap it.
		if procState(pid) == "Z" {
			continue
		}
		requireStoppedOriginal(t, &proc{pid: pid})
		live++
	}
	if live < 4 {
		t.Errorf("%d members of the tree (root included) were alive and checked, want at least 4", live)
	}
	if len(members) < 3 {
		t.Errorf("the tree had %d members besides the root, want at least 3", len(members))
	}
}

// TestLazyTreePendingSIGCHLD migrates lazily, with --pidns, a tree whose
// root (its namespace's init) has SIGCHLD pending (blocked, its child
// reaped) and a zombie child: a frozen parent whose child exits has both.
// The signal is queued again from inside the process with its own ids
// (lazycr's pid means another process, or none, in the namespace: the
// restore failed with EPERM before), and the root still sees it pending;
// the zombie is restored with the pid the root knows it by (it got
// lazycr's pid before, and the root's wait failed ECHILD).
func TestLazyTreePendingSIGCHLD(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(buildC(t, "pendchld"))
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID}
	p := startCmd(t, cmd)
	var r struct {
		Pid    int `json:"pid"`
		Child  int `json:"child"`
		Zombie int `json:"zombie"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "pending:ok", "zombie:ok")
	progress(t, p)
	src := startLazySource(t, nil, p.pid, "127.0.0.1")
	args := []string{"restore", "--lazy-from", src.addr, "--pidns"}
	dst := startLazyRun(t, "target lazycr "+strings.Join(args, " "), lazyCmd(t, nil, args...))
	rp := adopt(t, lazyResumedPID(t, dst))
	t.Cleanup(func() { unix.Kill(rp.pid, unix.SIGKILL) })
	rp.continueOutput(p, true)
	dst.requireExit(t, 0)
	src.requireExit(t, 0)
	requireProgress(t, rp, "pending:ok", "zombie:ok")
	for _, k := range []string{"pending:bad", "zombie:bad"} {
		if bad := progress(t, rp)[k]; bad != 0 {
			t.Errorf("%s ticked %d times after the migration", k, bad)
		}
	}
}
