package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// TestTreeRestore dumps and restores a C process tree (root, two children,
// a grandchild; a child leading its own group, another its own session; a
// pipe between two members with data buffered in it; a file description
// shared by three members) that checks itself: after restore every member
// must have its pid, parent, session and group, the pipe must carry on
// with no value lost, and the shared offset must keep records from
// overwriting each other.
func TestTreeRestore(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "treecheck")
	p := start(t, bin, filepath.Join(t.TempDir(), "records"))
	var r struct {
		Pid int `json:"pid"`
		C1  int `json:"c1"`
		C2  int `json:"c2"`
		G   int `json:"g"`
	}
	waitReport(t, p, &r)
	members := map[int]int{r.C1: r.Pid, r.C2: r.Pid, r.G: r.C1} // pid → parent
	t.Cleanup(func() {
		for pid := range members {
			unix.Kill(pid, unix.SIGKILL)
		}
	})
	keys := []string{"root:ok", "c1:ok", "c2:ok", "g:ok", "pipe", "file"}
	requireProgress(t, p, keys...)

	dir := dumpKill(t, p)
	for pid := range members {
		waitGone(t, pid)
	}
	rp := restoreFrom(t, p, dir)
	if rp.pid != r.Pid {
		t.Fatalf("root restored as pid %d, want %d", rp.pid, r.Pid)
	}
	for pid, parent := range members {
		if got := statField(t, pid, 4); got != fmt.Sprint(parent) {
			t.Errorf("pid %d has parent %s after restore, want %d", pid, got, parent)
		}
	}
	requireProgress(t, rp, keys...)
	checkSequence(t, rp, keys...)
	if s := rp.stderr(); s != "" {
		t.Errorf("the tree complains:\n%s", s)
	}
}

// statField returns field n (1-based, as proc(5) numbers them; n >= 3)
// of /proc/PID/stat.
func statField(t *testing.T, pid, n int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || n < 3 || n-3 >= len(f) {
		t.Fatalf("pid %d: no stat field %d in %q", pid, n, b)
	}
	return f[n-3]
}

// TestTreeZombie dumps a process whose child has exited (status 3) and is
// not reaped yet: after restore the child is again its zombie, with the
// same pid and exit status, and the parent runs on.
func TestTreeZombie(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "zombie"))
	var r struct {
		Pid   int `json:"pid"`
		Child int `json:"child"`
	}
	waitReport(t, p, &r)
	deadline := time.Now().Add(reportTimeout)
	for procState(r.Child) != "Z" {
		if time.Now().After(deadline) {
			t.Fatalf("child %d is in state %q, not a zombie", r.Child, procState(r.Child))
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
	requireProgress(t, p, "main", "chld1")
	dir := dumpKill(t, p)
	waitGone(t, r.Child) // orphaned by the kill: PID 1 reaps it
	rp := restoreFrom(t, p, dir)
	if procState(r.Child) != "Z" || statField(t, r.Child, 4) != fmt.Sprint(r.Pid) {
		t.Fatalf("child %d after restore: state %q, parent %s; want a zombie of %d", r.Child, procState(r.Child), statField(t, r.Child, 4), r.Pid)
	}
	if got := statField(t, r.Child, 52); got != fmt.Sprint(3<<8) {
		t.Errorf("zombie %d has exit code %s, want %d", r.Child, got, 3<<8)
	}
	// The parent counted one SIGCHLD before the dump; the exit that
	// recreates the zombie must not give it a second.
	requireProgress(t, rp, "main", "chld1")
	checkSequence(t, rp, "main", "chld1")
}

// TestTreeLeaveRunning checkpoints the self-checking tree with
// --leave-running: the image holds every member with its links, the pipe
// between two members and the description three of them share; the tree
// runs on untraced, its checks holding.
func TestTreeLeaveRunning(t *testing.T) {
	t.Parallel()
	p, r := startTreecheck(t)
	keys := []string{"root:ok", "c1:ok", "c2:ok", "g:ok", "pipe", "file"}
	requireProgress(t, p, keys...)
	img := dumpLeaveRunning(t, r.Pid)
	want := map[int]int{r.C1: r.Pid, r.C2: r.Pid, r.G: r.C1}
	if n := len(img.Tree.Processes); n != 4 {
		t.Fatalf("the image holds %d processes, want 4", n)
	}
	for pid, parent := range want {
		if got := img.process(t, pid).Ppid; got != uint32(parent) {
			t.Errorf("image: pid %d has parent %d, want %d", pid, got, parent)
		}
	}
	if c2 := img.process(t, r.C2); c2.Sid != uint32(r.C2) || c2.Pgid != uint32(r.C2) {
		t.Errorf("image: c2 is in session %d group %d, want its own", c2.Sid, c2.Pgid)
	}
	if c1 := img.process(t, r.C1); c1.Pgid != uint32(r.C1) || img.process(t, r.G).Pgid != uint32(r.C1) {
		t.Errorf("image: c1's group is %d, g's %d, want %d", c1.Pgid, img.process(t, r.G).Pgid, r.C1)
	}
	if len(img.Tree.Pipes) != 1 {
		t.Errorf("image: %d pipes between members, want 1 (c2 → root): %v", len(img.Tree.Pipes), img.Tree.Pipes)
	}
	records := false
	for _, sf := range img.Tree.SharedFiles {
		f := fdIn(img, sf.Owner.Pid, sf.Owner.Fd)
		if strings.HasSuffix(f.GetFile().GetFile().GetPath(), "/records") {
			records = true
			if sf.Owner.Pid != uint32(r.Pid) || len(sf.Users) != 2 {
				t.Errorf("image: the records file is shared by %v + %v, want root + c1, g", sf.Owner, sf.Users)
			}
		}
	}
	if !records {
		t.Errorf("image: the records file is not shared: %v", img.Tree.SharedFiles)
	}
	requireProgress(t, p, keys...)
	for pid := range want {
		requireRunning(t, pid)
	}
}

func fdIn(img *imageSet, pid uint32, fd int32) *pb.Fd {
	for _, f := range img.Fds[pid].GetFds() {
		if f.Fd == fd {
			return f
		}
	}
	return nil
}

// TestTreeDumpRefusedMember dumps a shell whose child holds a file lock
// lazycr cannot restore (an flock on a FIFO: locks are re-taken on regular
// files only): the dump is refused naming the lock, and every member of
// the tree runs on, neither stopped nor traced.
func TestTreeDumpRefusedMember(t *testing.T) {
	t.Parallel()
	needRoot(t)
	for _, tool := range []string{"bash", "flock"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found", tool)
		}
	}
	lock := filepath.Join(t.TempDir(), "lock")
	if err := unix.Mkfifo(lock, 0o600); err != nil {
		t.Fatal(err)
	}
	// The subshell is the child that holds fd 9 with the lock on it.
	pid, sub := startShellChild(t, `(flock 9; while true; do sleep 0.05; done) 9<>`+lock+` & while true; do sleep 0.05; done`,
		"holds the lock", func(_, c int) bool {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/9", c))
			return err == nil && strings.Contains(string(b), "lock:")
		})
	dir := filepath.Join(t.TempDir(), "img")
	_, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(pid), "-D", dir)
	if code != 1 || !strings.Contains(errOut, "flock WRITE lock on an fd of kind fifo") || !strings.Contains(errOut, strconv.Itoa(sub)) {
		t.Fatalf("dump of a tree whose member %d holds a lock: exit %d, want 1 naming the pid and the lock; stderr:\n%s", sub, code, errOut)
	}
	requireRunning(t, pid)
	requireRunning(t, sub)
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the failed dump left %s behind (stat: %v)", dir, err)
	}
}

// TestTreeRestoreFailpoints fails a tree restore after the members are
// cloned, before the first member but the root is rebuilt, and once a
// member already runs: each time no process of the tree may be left (every
// pid is free again), and a restore without the failure then succeeds.
func TestTreeRestoreFailpoints(t *testing.T) {
	t.Parallel()
	lazycr := failpointLazycr(t)
	p, r := startTreecheck(t)
	pids := []int{r.Pid, r.C1, r.C2, r.G}
	keys := []string{"root:ok", "c1:ok", "c2:ok", "g:ok", "pipe", "file"}
	requireProgress(t, p, keys...)
	dir := dumpKill(t, p)
	for _, pid := range pids {
		waitGone(t, pid)
	}
	for _, fp := range []string{"restore.tree.members", "restore.tree.member", "restore.tree.resume"} {
		_, errOut, code := runFailpoint(t, lazycr, fp, "", "restore", "-D", dir)
		if code != 1 || !strings.Contains(errOut, "injected") {
			t.Fatalf("restore with failpoint %s: exit %d, want 1; stderr:\n%s", fp, code, errOut)
		}
		for _, pid := range pids {
			waitGone(t, pid)
		}
	}
	rp := restoreFrom(t, p, dir)
	requireProgress(t, rp, keys...)
	checkSequence(t, rp, keys...)
}

// TestTreePIDNS restores the self-checking tree whose root is the init of
// its own PID namespace with --pidns: every member keeps its pid, parent,
// session and group as seen inside the namespace.
func TestTreePIDNS(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(buildC(t, "treecheck"), filepath.Join(t.TempDir(), "records"))
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID}
	p := startCmd(t, cmd)
	var r struct {
		Pid int `json:"pid"`
		C1  int `json:"c1"`
		C2  int `json:"c2"`
		G   int `json:"g"`
	}
	waitReport(t, p, &r)
	if r.Pid != 1 {
		t.Fatalf("the root reports pid %d in its namespace, want 1", r.Pid)
	}
	keys := []string{"root:ok", "c1:ok", "c2:ok", "g:ok", "pipe", "file"}
	requireProgress(t, p, keys...)
	hostPids := descendants(t, p.pid)
	dir := dumpKill(t, p)
	for _, pid := range hostPids {
		waitGone(t, pid)
	}
	rp := restoreFrom(t, p, dir, "--pidns")
	t.Cleanup(func() { unix.Kill(rp.pid, unix.SIGKILL) }) // the namespace's init: the rest goes with it
	requireProgress(t, rp, keys...)
	checkSequence(t, rp, keys...)
	got := map[string]bool{}
	for _, pid := range descendants(t, rp.pid) {
		st := readStatusFile(t, pid)
		got[statusField(st, "NSpid")+" ppid "+statusField(st, "PPid")] = true
	}
	if len(got) != 3 {
		t.Errorf("the restored root has %d descendants, want 3: %v", len(got), got)
	}
	if s := rp.stderr(); s != "" {
		t.Errorf("the tree complains:\n%s", s)
	}
}

// descendants lists the pids of pid's descendants, breadth first.
func descendants(t *testing.T, pid int) []int {
	t.Helper()
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", p, p))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range strings.Fields(string(b)) {
			c, err := strconv.Atoi(f)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

func readStatusFile(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestTreeOrphan restores a child subreaper with an orphan re-parented to
// it (its parent exited): the orphan comes back as the subreaper's child,
// with its second thread.
func TestTreeOrphan(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "orphan"))
	var r struct {
		Pid    int `json:"pid"`
		Orphan int `json:"orphan"`
	}
	waitReport(t, p, &r)
	t.Cleanup(func() { unix.Kill(r.Orphan, unix.SIGKILL) })
	keys := []string{"root", "orphan:ok", "orphan:thread"}
	requireProgress(t, p, keys...)
	dir := dumpKill(t, p)
	waitGone(t, r.Orphan)
	rp := restoreFrom(t, p, dir)
	if got := statField(t, r.Orphan, 4); got != fmt.Sprint(r.Pid) {
		t.Errorf("the orphan %d has parent %s after restore, want %d", r.Orphan, got, r.Pid)
	}
	if n := len(tasks(t, r.Orphan)); n != 2 {
		t.Errorf("the orphan has %d threads after restore, want 2", n)
	}
	requireProgress(t, rp, keys...)
	checkSequence(t, rp, keys...)
}

// TestTreeRefusesOtherNamespace dumps a shell whose child runs in a UTS
// namespace of its own: refused, naming the child and the namespace, and
// both run on.
func TestTreeRefusesOtherNamespace(t *testing.T) {
	t.Parallel()
	needRoot(t)
	for _, tool := range []string{"bash", "unshare", "sleep"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found", tool)
		}
	}
	pid, child := startShellChild(t, "unshare --uts sleep 1000 & wait", "in a UTS namespace of its own", func(pid, c int) bool {
		own, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/uts", pid))
		theirs, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/uts", c))
		return theirs != "" && theirs != own
	})
	dir := filepath.Join(t.TempDir(), "img")
	_, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(pid), "-D", dir)
	if code != 1 || !strings.Contains(errOut, "uts namespace") || !strings.Contains(errOut, strconv.Itoa(child)) {
		t.Fatalf("dump of a tree with a member in its own UTS namespace: exit %d, want 1 naming pid %d and the namespace; stderr:\n%s", code, child, errOut)
	}
	requireRunning(t, pid)
	requireRunning(t, child)
}

// startShellChild starts `bash -c script` and waits (polling, reportTimeout)
// until is(pid, child) says one of its children is the one the test wants
// (what says what is wanted of it). The shell and that child are killed when t ends.
func startShellChild(t *testing.T, script, what string, is func(pid, child int) bool) (pid, child int) {
	t.Helper()
	cmd := exec.Command("bash", "-c", script)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	pid = cmd.Process.Pid
	t.Cleanup(func() {
		if child > 0 {
			unix.Kill(child, unix.SIGKILL)
		}
		cmd.Process.Kill()
		<-done
	})
	deadline := time.Now().Add(reportTimeout)
	for {
		kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		for _, k := range strings.Fields(string(kids)) {
			if c, _ := strconv.Atoi(k); c > 0 && is(pid, c) {
				child = c
				return pid, child
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no child of pid %d %s", pid, what)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
}

// treecheckReport is what treecheck reports: the root and its members.
type treecheckReport struct {
	Pid int `json:"pid"`
	C1  int `json:"c1"`
	C2  int `json:"c2"`
	G   int `json:"g"`
}

// startTreecheck starts the self-checking tree (a root, two children, a
// grandchild) and waits for its report; the members are killed when t
// ends (the root by start).
func startTreecheck(t *testing.T) (*proc, treecheckReport) {
	t.Helper()
	p := start(t, buildC(t, "treecheck"), filepath.Join(t.TempDir(), "records"))
	var r treecheckReport
	waitReport(t, p, &r)
	t.Cleanup(func() {
		for _, pid := range []int{r.C1, r.C2, r.G} {
			unix.Kill(pid, unix.SIGKILL)
		}
	})
	return p, r
}
