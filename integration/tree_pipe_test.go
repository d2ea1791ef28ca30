package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// TestTreePipeHeldOutside: two members (root and child) hold both ends of
// a pipe whose read end the test also holds, and both write lines into it.
// After dump -D (kill) and restore -D the test's own pipe must carry on
// with both members' counters, none missing or repeated: the restored
// members are joined to the live pipe the test still holds, not to a
// fresh one between them (which the test would never see).
func TestTreePipeHeldOutside(t *testing.T) {
	t.Parallel()
	tp := startTreePipeOut(t, nil)
	p, lines, rep := tp.p, tp.lines, tp.rep
	lines.waitAll(t, 3, "root", "child")

	dir := dumpKill(t, p)
	waitGone(t, rep.Child)
	img := show(t, dir)
	if n := len(img.Tree.GetPipes()); n != 1 || len(img.Tree.Pipes[0].GetOutside()) == 0 {
		t.Errorf("the image has %d pipes between members (%v), want 1 with the test as outside holder", n, img.Tree.GetPipes())
	}
	lines.waitEOF(t)
	before := lines.snapshot()
	restoreFrom(t, p, dir)
	if got := statField(t, rep.Child, 4); got != fmt.Sprint(rep.Pid) {
		t.Errorf("child %d has parent %s after restore, want %d", rep.Child, got, rep.Pid)
	}
	lines.waitAll(t, max(before["root"], before["child"])+5, "root", "child")
	lines.check(t)
}

// TestTreePipeRdwrHeldOutside: as TestTreePipeHeldOutside, but both
// members write through a read-write description of the test's pipe
// (fd 5, reopened O_RDWR through /proc): restored, that fd must still be
// writable and still the test's pipe.
func TestTreePipeRdwrHeldOutside(t *testing.T) {
	t.Parallel()
	tp := startTreePipeOut(t, nil, "rdwr")
	p, lines, rep := tp.p, tp.lines, tp.rep
	lines.waitAll(t, 3, "root", "child")
	dir := dumpKill(t, p)
	waitGone(t, rep.Child)
	lines.waitEOF(t)
	before := lines.snapshot()
	rp := restoreFrom(t, p, dir)
	lines.waitAll(t, max(before["root"], before["child"])+5, "root", "child")
	for _, pid := range []int{rep.Pid, rep.Child} {
		if fl := statusFlags(t, pid, 5); fl&unix.O_ACCMODE != unix.O_RDWR {
			t.Errorf("pid %d fd 5 has flags %#o after restore, want O_RDWR", pid, fl)
		}
	}
	lines.check(t)
	if s := rp.stderr(); s != "" {
		t.Errorf("the tree complains:\n%s", s)
	}
}

// treePipeOut is treepipeout running as a root and a child that write tick
// lines into a pipe the test holds the read end of (their fds 3 and 4 are
// the pipe's read and write ends).
type treePipeOut struct {
	p     *proc
	lines *pipeCounters
	ino   uint64 // the test's pipe
	rep   struct {
		Pid   int `json:"pid"`
		Child int `json:"child"`
	}
}

// startTreePipeOut starts treepipeout with args (a mode, or none), with
// prep applied to its command (nil for none), and waits for its report.
// The child is killed at the end of the test, unless the tree has its own
// PID namespace (its pids mean other processes here; the namespace ends
// with its init).
func startTreePipeOut(t *testing.T, prep func(*exec.Cmd), args ...string) *treePipeOut {
	t.Helper()
	bin := buildC(t, "treepipeout")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(r.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.ExtraFiles = []*os.File{r, w} // fds 3 (read end) and 4 (write end)
	if prep != nil {
		prep(cmd)
	}
	tp := &treePipeOut{ino: st.Ino}
	tp.p = startCmd(t, cmd)
	w.Close()
	tp.lines = watchPipe(t, r, tickLine)
	waitReport(t, tp.p, &tp.rep)
	if cmd.SysProcAttr == nil || cmd.SysProcAttr.Cloneflags&unix.CLONE_NEWPID == 0 {
		t.Cleanup(func() { unix.Kill(tp.rep.Child, unix.SIGKILL) })
	}
	return tp
}

// statusFlags returns the flags /proc/PID/fdinfo/FD shows.
func statusFlags(t *testing.T, pid, fd int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "flags:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
			if err != nil {
				t.Fatalf("fdinfo of pid %d fd %d: flags %q: %v", pid, fd, v, err)
			}
			return int(n)
		}
	}
	t.Fatalf("fdinfo of pid %d fd %d has no flags: %s", pid, fd, b)
	return 0
}

// TestTreePipeOneMemberHeldOutside: the root alone holds both ends of the
// test's pipe (its child closed them): after dump -D and restore -D the
// root's counter carries on in the test's pipe (a member holding both
// ends used to get a fresh pipe of its own).
func TestTreePipeOneMemberHeldOutside(t *testing.T) {
	t.Parallel()
	tp := startTreePipeOut(t, nil, "rootonly")
	p, lines, rep := tp.p, tp.lines, tp.rep
	lines.waitAll(t, 3, "root")
	dir := dumpKill(t, p)
	waitGone(t, rep.Child)
	if n := len(show(t, dir).Tree.GetPipes()); n != 1 {
		t.Errorf("the image has %d tree pipes, want 1 (the root's, held outside)", n)
	}
	lines.waitEOF(t)
	before := lines.snapshot()
	restoreFrom(t, p, dir)
	lines.waitAll(t, before["root"]+5, "root")
	if n := lines.snapshot()["child"]; n != 0 {
		t.Errorf("the child wrote %d lines", n)
	}
	lines.check(t)
}

// TestTreePipeHeldOutsideForeignBoot: as TestTreePipeHeldOutside, but the
// image says it comes from another boot, where the pipe and the test's
// pid mean nothing: restore must not join the test's pipe, and say so
// naming the test's pid; the two members still share one pipe (a fresh
// one), not one each.
func TestTreePipeHeldOutsideForeignBoot(t *testing.T) {
	t.Parallel()
	tp := startTreePipeOut(t, nil)
	p, lines, rep := tp.p, tp.lines, tp.rep
	st := unix.Stat_t{Ino: tp.ino}
	lines.waitAll(t, 2, "root", "child")
	dir := dumpKill(t, p)
	waitGone(t, rep.Child)

	path := filepath.Join(dir, image.FdsFile(uint32(rep.Pid)))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fds := &pb.FdTable{}
	if err := image.Decode(path, b, image.KindFds, fds); err != nil {
		t.Fatal(err)
	}
	fds.BootId = "00000000-0000-4000-8000-000000000000"
	if b, err = image.Encode(image.KindFds, fds); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	o, e, code := runLazycr(t, "restore", "-D", dir)
	if code != 0 {
		t.Fatalf("lazycr restore: exit %d\n%s%s", code, o, e)
	}
	adopt(t, rep.Pid)
	for _, want := range []string{
		fmt.Sprintf("held by pid %d outside the tree, which cannot be rejoined", os.Getpid()),
		fmt.Sprintf("use --inherit-fd 3 to pass one for fd 3 of pid %d", rep.Pid),
	} {
		if !strings.Contains(e, want) {
			t.Errorf("restore does not say %q:\n%s", want, e)
		}
	}
	ours := fmt.Sprintf("pipe:[%d]", st.Ino)
	var targets []string
	for _, pid := range []int{rep.Pid, rep.Child} {
		for _, fd := range []int{3, 4} {
			l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
			if err != nil {
				t.Fatal(err)
			}
			targets = append(targets, l)
		}
	}
	for _, l := range targets {
		if l != targets[0] || l == ours {
			t.Errorf("the restored members' fds 3 and 4 are %v: want one pipe for all, not the test's %s", targets, ours)
			break
		}
	}
	lines.check(t)
}

// TestTreePipeInheritFd: as TestTreePipeHeldOutside, but restore is given
// another pipe with --inherit-fd 4 (fd 4 is the members' write end): both
// members write into that pipe (the inherited description and a new read
// end of it), and no longer into the test's first pipe, although it is
// still alive: the caller's choice wins over rejoining.
func TestTreePipeInheritFd(t *testing.T) {
	t.Parallel()
	tp := startTreePipeOut(t, nil)
	p, first, rep := tp.p, tp.lines, tp.rep
	first.waitAll(t, 2, "root", "child")
	dir := dumpKill(t, p)
	waitGone(t, rep.Child)
	first.waitEOF(t)
	before := first.snapshot()

	r2, w2, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	second := watchPipe(t, r2, tickLine)
	restore := exec.Command(lazycrPath, "restore", "-D", dir, "--inherit-fd", "4")
	restore.ExtraFiles = []*os.File{nil, w2} // lazycr's fd 4
	var out, errOut strings.Builder
	restore.Stdout, restore.Stderr = &out, &errOut
	err = restore.Run()
	w2.Close()
	if err != nil {
		t.Fatalf("lazycr restore --inherit-fd 4: %v\n%s", err, errOut.String())
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out.String()))
	if err != nil || pid != rep.Pid {
		t.Fatalf("restore printed %q, want pid %d", out.String(), rep.Pid)
	}
	adopt(t, pid)
	second.waitAll(t, max(before["root"], before["child"])+3, "root", "child")
	if now := first.snapshot(); now["root"] != before["root"] || now["child"] != before["child"] {
		t.Errorf("the first pipe got lines after the restore (%v, before %v): the inherited pipe was not used", now, before)
	}
	second.mu.Lock()
	for _, k := range []string{"root", "child"} {
		if second.first[k] != before[k]+1 {
			t.Errorf("the inherited pipe's first %s line is %d, want %d (the line after the last one the first pipe got)", k, second.first[k], before[k]+1)
		}
	}
	second.mu.Unlock()
	first.check(t)
	second.check(t)
}

// TestTreePipeHeldOutsideLazy is TestTreePipeHeldOutside migrated with
// dump --lazy / restore --lazy-from --pidns (the tree is the init of its
// own PID namespace): the members rejoin the test's pipe while the frozen
// original still holds it, and carry on once it is gone.
func TestTreePipeHeldOutsideLazy(t *testing.T) {
	t.Parallel()
	tp := startTreePipeOut(t, func(c *exec.Cmd) { c.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID} })
	p, lines := tp.p, tp.lines
	lines.waitAll(t, 3, "root", "child")
	rp, _ := migrateLazyPIDNS(t, lazyEnv{}, p)
	before := lines.snapshot()
	if n := len(descendants(t, rp.pid)); n != 1 {
		t.Errorf("the restored root has %d descendants, want 1", n)
	}
	lines.waitAll(t, max(before["root"], before["child"])+5, "root", "child")
	lines.check(t)
}

// TestTreePipeShellStdout runs `bash -c 'loop'` whose stdout is a pipe the
// test reads (as a harness would): bash and its sleep share the pipe's
// write end. After dump -D and restore -D the count must carry on in the
// test's pipe with no number missing or repeated.
func TestTreePipeShellStdout(t *testing.T) {
	t.Parallel()
	needRoot(t)
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash not found")
	}
	for round := range 2 {
		t.Run(strconv.Itoa(round), func(t *testing.T) {
			t.Parallel()
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bash, "-c", "i=1; while true; do sleep 0.05; echo count $((i++)); done")
			cmd.Stdout = w
			p := startCmd(t, cmd)
			w.Close()
			lines := watchPipe(t, r, tickLine)
			lines.waitAll(t, uint64(3+round), "count")
			dir := dumpKill(t, p)
			img := show(t, dir)
			var members []int
			for _, m := range img.Tree.GetProcesses() {
				members = append(members, int(m.Pid))
			}
			t.Cleanup(func() {
				for _, m := range members {
					unix.Kill(m, unix.SIGKILL)
				}
			})
			for _, m := range members {
				waitGone(t, m)
			}
			n := lines.snapshot()["count"]
			o, e, code := runLazycr(t, "restore", "-D", dir)
			if code != 0 {
				t.Fatalf("lazycr restore: exit %d\n%s%s", code, o, e)
			}
			if got := strings.TrimSpace(o); got != strconv.Itoa(p.pid) {
				t.Fatalf("restored as pid %s, want %d", got, p.pid)
			}
			lines.waitAll(t, n+5, "count")
			lines.check(t)
		})
	}
}

// TestTreePipeShellStdoutLazy is TestTreePipeShellStdout migrated lazily
// between two network-namespace hosts (bash the init of its own PID
// namespace, dump --lazy / restore --lazy-from --pidns): the count goes
// on in the test's pipe.
func TestTreePipeShellStdoutLazy(t *testing.T) {
	t.Parallel()
	env := lazyTwoHosts(t)
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash not found")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := env.src.Command(context.Background(), bash, "-c", "i=1; while true; do sleep 0.05; echo count $((i++)); done")
	cmd.Stdout = w
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID}
	p := startCmd(t, cmd)
	w.Close()
	// The harness follows p's stdout file, report line first: this one
	// has an empty report and no ticks (the count goes into the pipe).
	if err := os.WriteFile(p.outPath, []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitReport(t, p, &struct{}{})
	lines := watchPipe(t, r, tickLine)
	lines.waitAll(t, 3, "count")
	rp, _ := migrateLazyPIDNS(t, env, p)
	lines.waitAll(t, lines.snapshot()["count"]+5, "count")
	requireRunning(t, rp.pid)
	lines.check(t)
}

// tickLine parses "tick KEY N" or "KEY N".
func tickLine(l string) (string, uint64, error) {
	f := strings.Fields(l)
	if len(f) == 3 && f[0] == "tick" {
		f = f[1:]
	}
	if len(f) != 2 {
		return "", 0, fmt.Errorf("line %q is not a counter", l)
	}
	n, err := strconv.ParseUint(f[1], 10, 64)
	return f[0], n, err
}

// pipeCounters follows the counters written into a pipe the test reads.
type pipeCounters struct {
	mu    sync.Mutex
	first map[string]uint64 // the first counter seen per key
	last  map[string]uint64
	errs  []string
	eof   bool // a read found no writer (since the last line)
}

// watchPipe reads r until the test ends, checking each key's counter goes
// up by one per line. EOF (no writer for now, e.g. between the dump and
// the restore) is not the end: the pipe is read again after a moment.
func watchPipe(t *testing.T, r *os.File, parse func(string) (string, uint64, error)) *pipeCounters {
	c := &pipeCounters{first: map[string]uint64{}, last: map[string]uint64{}}
	stop := make(chan struct{})
	done := make(chan struct{})
	t.Cleanup(func() { close(stop); r.Close(); <-done })
	go func() {
		defer close(done)
		var pending []byte
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			pending = append(pending, buf[:n]...)
			for {
				line, rest, ok := bytes.Cut(pending, []byte("\n"))
				if !ok {
					break
				}
				pending = rest
				c.add(string(line), parse)
			}
			if errors.Is(err, io.EOF) {
				c.mu.Lock()
				c.eof = true
				c.mu.Unlock()
				select {
				case <-stop:
					return
				case <-time.After(2 * time.Millisecond): // poll interval: no writer yet
				}
				continue
			}
			if err != nil {
				return // closed at the end of the test
			}
		}
	}()
	return c
}

func (c *pipeCounters) add(l string, parse func(string) (string, uint64, error)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k, n, err := parse(l)
	if err != nil {
		c.errs = append(c.errs, err.Error())
		return
	}
	if last, seen := c.last[k]; seen && n != last+1 {
		c.errs = append(c.errs, fmt.Sprintf("%s %d follows %d (a skipped or repeated line)", k, n, last))
	}
	if _, seen := c.first[k]; !seen {
		c.first[k] = n
	}
	c.last[k] = n
	c.eof = false
}

// waitEOF waits until the pipe has no writer and everything in it is read.
func (c *pipeCounters) waitEOF(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(progressTimeout)
	for {
		c.mu.Lock()
		eof := c.eof
		c.mu.Unlock()
		if eof {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pipe still has a writer after %v", progressTimeout)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
}

func (c *pipeCounters) snapshot() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]uint64{}
	for k, v := range c.last {
		out[k] = v
	}
	return out
}

// waitAll waits until every key's counter has reached n.
func (c *pipeCounters) waitAll(t *testing.T, n uint64, keys ...string) {
	t.Helper()
	deadline := time.Now().Add(progressTimeout)
	for {
		s := c.snapshot()
		ok := true
		for _, k := range keys {
			ok = ok && s[k] >= n
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pipe's counters are %v after %v, want %v at %d or more", s, progressTimeout, keys, n)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
}

func (c *pipeCounters) check(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.errs {
		t.Error(e)
	}
}
