package integration

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/internal/kabi"
	"golang.org/x/sys/unix"
)

// Tests of a single process (no children) holding both ends of pipes or
// FIFOs that a process outside the dump — the test — holds too
// (pipeoutside.c): the test writes "ping N" into pipe A, the process
// answers "pong N" into pipe B. Restored on the same boot, the process
// must be on the test's very pipes again (a fresh pipe would carry the
// process's traffic to itself and the test would wait forever); where
// they cannot be rejoined, restore refuses, naming the test's pid and
// --inherit-fd.

// pingPong is the test's side of the conversation.
type pingPong struct {
	ping  *os.File // the test's write end of A
	pongs chan string
	next  uint64 // the next ping to send
	want  uint64 // the next pong expected
}

// newPingPong reads pong lines from pong (a pollable description of B:
// Close wakes the reader) until the test ends.
func newPingPong(t *testing.T, ping, pong *os.File) *pingPong {
	pp := &pingPong{ping: ping, pongs: make(chan string, 64), next: 1, want: 1}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pong)
		for sc.Scan() {
			select {
			case pp.pongs <- sc.Text():
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); pong.Close(); <-done })
	return pp
}

// send writes the next ping (one write(2), atomic: pipe(7)).
func (pp *pingPong) send(t *testing.T) {
	t.Helper()
	if _, err := fmt.Fprintf(pp.ping, "ping %d\n", pp.next); err != nil {
		t.Fatalf("write ping %d: %v", pp.next, err)
	}
	pp.next++
}

// expect waits for the next pong, which must answer the oldest ping not
// yet answered: none missing, none repeated.
func (pp *pingPong) expect(t *testing.T, p *proc) {
	t.Helper()
	select {
	case l := <-pp.pongs:
		if want := fmt.Sprintf("pong %d", pp.want); l != want {
			t.Fatalf("got %q from the pipe, want %q", l, want)
		}
		pp.want++
	case <-time.After(progressTimeout):
		t.Fatalf("no pong %d within %v (state of pid %d: %s); stderr:\n%s", pp.want, progressTimeout, p.pid, procState(p.pid), p.stderr())
	}
}

// rounds exchanges n pings and pongs, one at a time.
func (pp *pingPong) rounds(t *testing.T, p *proc, n int) {
	t.Helper()
	for range n {
		pp.send(t)
		pp.expect(t, p)
	}
}

// pipeOutside is pipeoutside started in pipe mode: the test holds both
// ends of both pipes (a and b: read end, write end), as does the process
// (fds 3, 4 and 5, 6).
type pipeOutside struct {
	p    *proc
	pp   *pingPong
	a, b [2]*os.File
	ino  [2]uint64 // inodes of a and b
}

func startPipeOutside(t *testing.T) *pipeOutside {
	t.Helper()
	bin := buildC(t, "pipeoutside")
	po := &pipeOutside{}
	for i, ends := range []*[2]*os.File{&po.a, &po.b} {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		ends[0], ends[1] = r, w
		t.Cleanup(func() { r.Close(); w.Close() })
		var st unix.Stat_t
		if err := unix.Fstat(int(r.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		po.ino[i] = st.Ino
	}
	cmd := exec.Command(bin, "pipe")
	cmd.ExtraFiles = []*os.File{po.a[0], po.a[1], po.b[0], po.b[1]}
	po.p = startCmd(t, cmd)
	// The test's own reading description of b (pollable, unlike the
	// passed ones, which os/exec made blocking).
	pong, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", po.b[0].Fd()), os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	po.pp = newPingPong(t, po.a[1], pong)
	waitReport(t, po.p, &struct {
		Pid int `json:"pid"`
	}{})
	po.pp.rounds(t, po.p, 3)
	return po
}

// stopAndPing stops p (SIGSTOP) and sends a ping it cannot read yet: the
// dump then finds it buffered in pipe A.
func stopAndPing(t *testing.T, p *proc, pp *pingPong) {
	t.Helper()
	if err := unix.Kill(p.pid, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitAllStopped(t, p.pid)
	pp.send(t)
}

// requireHolders checks that every pipe fd of pid in the image records
// the test as a holder.
func requireHolders(t *testing.T, img *imageSet, pid int) {
	t.Helper()
	var n int
	for _, f := range img.fds(t, pid).GetFds() {
		p := f.GetPipe()
		if p == nil {
			continue
		}
		n++
		var found bool
		for _, h := range p.Holders {
			found = found || int(h.Pid) == os.Getpid()
		}
		if !found {
			t.Errorf("fd %d (%v) does not record the test (pid %d) as a holder", f.Fd, p, os.Getpid())
		}
	}
	if n != 6 {
		t.Errorf("the image has %d pipe fds, want 6", n)
	}
}

// requireSharedWithTest checks that fds 3-6 of pid are again the very
// open file descriptions the test passed it (kcmp(2) KCMP_FILE), and
// that its own fds 7 and 8 are none of them.
func requireSharedWithTest(t *testing.T, pid int, po *pipeOutside) {
	t.Helper()
	ours := []*os.File{po.a[0], po.a[1], po.b[0], po.b[1]}
	for fd := 3; fd <= 8; fd++ {
		var shared []int
		for i, f := range ours {
			same, err := kabi.KcmpFile(os.Getpid(), pid, int(f.Fd()), fd)
			if err != nil {
				t.Fatalf("kcmp fd %d of pid %d: %v", fd, pid, err)
			}
			if same {
				shared = append(shared, 3+i)
			}
		}
		want := []int{fd}
		if fd > 6 {
			want = nil
		}
		if !slices.Equal(shared, want) {
			t.Errorf("fd %d of pid %d is the description the test passed as fds %v, want %v", fd, pid, shared, want)
		}
	}
}

// TestPipeOutside: dump -D (kill) and restore -D of a process holding
// both ends of two pipes the test holds too. A ping buffered in A at the
// dump (the process was stopped) and one written while it was gone are
// each answered once, and the conversation goes on both ways; fds 3-6
// are again the open file descriptions the test passed (os/exec), shared
// with the test.
func TestPipeOutside(t *testing.T) {
	t.Parallel()
	po := startPipeOutside(t)
	stopAndPing(t, po.p, po.pp) // ping 4, buffered at the dump
	dir := dumpKill(t, po.p)
	requireHolders(t, show(t, dir), po.p.pid)
	po.pp.send(t) // ping 5, written while the process is gone
	rp := restoreFrom(t, po.p, dir)
	waitAllStopped(t, rp.pid)
	if err := unix.Kill(rp.pid, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	po.pp.expect(t, rp) // 4
	po.pp.expect(t, rp) // 5
	po.pp.rounds(t, rp, 5)
	requireSharedWithTest(t, rp.pid, po)
	for i, fd := range []int{3, 5} {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", rp.pid, fd)); err != nil || l != fmt.Sprintf("pipe:[%d]", po.ino[i]) {
			t.Errorf("restored fd %d is %s (%v), want the test's pipe:[%d]", fd, l, err, po.ino[i])
		}
	}
	checkSequence(t, rp, "ping")
}

// TestPipeOutsideLazy is TestPipeOutside migrated post-copy on one host
// (dump --lazy / restore --lazy-from --new-pid): the restored process
// rejoins the test's pipes while the frozen original still holds them.
func TestPipeOutsideLazy(t *testing.T) {
	t.Parallel()
	po := startPipeOutside(t)
	po.pp.send(t) // ping 4: read before the freeze or buffered at it
	m := migrateLazy(t, lazyEnv{}, po.p, nil, nil)
	po.pp.send(t) // ping 5
	po.pp.expect(t, m.restored)
	po.pp.expect(t, m.restored)
	po.pp.rounds(t, m.restored, 5)
	requireSharedWithTest(t, m.restored.pid, po)
	checkSequence(t, m.restored, "ping")
}

// editFds rewrites pid's fd table in image dir with edit.
func editFds(t *testing.T, dir string, pid int, edit func(*pb.FdTable)) {
	t.Helper()
	path := filepath.Join(dir, image.FdsFile(uint32(pid)))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fds := &pb.FdTable{}
	if err := image.Decode(path, b, image.KindFds, fds); err != nil {
		t.Fatal(err)
	}
	edit(fds)
	if b, err = image.Encode(image.KindFds, fds); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestPipeOutsideNotRejoinable: the image says the test is another
// process now (its start time changed: the holder is gone), then that it
// comes from another boot. Either way the pipes cannot be rejoined and a
// fresh pipe would cut the process off from the test: restore refuses,
// naming the pipe, the test's pid and --inherit-fd. With --inherit-fd 3
// and 5 (the test passes its read ends of A and B) the process is on the
// test's pipes again and answers on.
func TestPipeOutsideNotRejoinable(t *testing.T) {
	t.Parallel()
	po := startPipeOutside(t)
	dir := dumpKill(t, po.p)
	wants := []string{
		regexp.QuoteMeta(fmt.Sprintf("pipe:[%d] held outside the dump and not rejoinable", po.ino[0])),
		fmt.Sprintf("pid %d ", os.Getpid()),
		"--inherit-fd 3 ",
	}
	for _, c := range []struct {
		name string
		edit func(*pb.FdTable)
	}{
		{"holder gone", func(fds *pb.FdTable) {
			for _, f := range fds.Fds {
				for _, h := range f.GetPipe().GetHolders() {
					h.StartTime++
				}
			}
		}},
		{"foreign boot", func(fds *pb.FdTable) { fds.BootId = "00000000-0000-4000-8000-000000000000" }},
	} {
		editFds(t, dir, po.p.pid, c.edit)
		_, e, code := runLazycr(t, "restore", "-D", dir)
		requireExit1(t, "restore ("+c.name+")", e, code, wants...)
	}
	po.pp.send(t) // ping 4, waiting in the test's pipe
	restore := exec.Command(lazycrPath, "restore", "-D", dir, "--inherit-fd", "3", "--inherit-fd", "5")
	restore.ExtraFiles = []*os.File{po.a[0], nil, po.b[0]} // lazycr's fds 3 and 5
	var out, errOut strings.Builder
	restore.Stdout, restore.Stderr = &out, &errOut
	if err := restore.Run(); err != nil {
		t.Fatalf("lazycr restore --inherit-fd 3 --inherit-fd 5: %v\n%s", err, errOut.String())
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out.String()))
	if err != nil || pid != po.p.pid {
		t.Fatalf("restore printed %q, want pid %d", out.String(), po.p.pid)
	}
	rp := adopt(t, pid)
	rp.continueOutput(po.p, true)
	po.pp.expect(t, rp)
	po.pp.rounds(t, rp, 3)
}

// fifoOutside is pipeoutside started in FIFO mode: it opens both ends of
// the FIFOs a and b, which the test holds open read-write.
type fifoOutside struct {
	p      *proc
	pp     *pingPong
	path   [2]string
	holder [2]*os.File
}

func startFifoOutside(t *testing.T) *fifoOutside {
	t.Helper()
	bin := buildC(t, "pipeoutside")
	fo := &fifoOutside{}
	dir := t.TempDir()
	for i, name := range []string{"a", "b"} {
		fo.path[i] = filepath.Join(dir, name)
		if err := unix.Mkfifo(fo.path[i], 0o600); err != nil {
			t.Fatal(err)
		}
		// O_RDWR never waits for a peer (fifo(7)); os.OpenFile makes it
		// pollable.
		f, err := os.OpenFile(fo.path[i], os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		fo.holder[i] = f
	}
	t.Cleanup(func() { fo.holder[0].Close() })
	fo.p = startCmd(t, exec.Command(bin, "fifo", fo.path[0], fo.path[1]))
	fo.pp = newPingPong(t, fo.holder[0], fo.holder[1])
	waitReport(t, fo.p, &struct {
		Pid int `json:"pid"`
	}{})
	fo.pp.rounds(t, fo.p, 3)
	return fo
}

// TestFifoOutside: as TestPipeOutside with two FIFOs the test holds
// open: the image records the test as their holder and the ping buffered
// in FIFO a at the dump; restore reopens the live FIFOs and does not write
// that ping again.
func TestFifoOutside(t *testing.T) {
	t.Parallel()
	fo := startFifoOutside(t)
	stopAndPing(t, fo.p, fo.pp) // ping 4
	dir := dumpKill(t, fo.p)
	img := show(t, dir)
	requireHolders(t, img, fo.p.pid)
	if f := img.fds(t, fo.p.pid).GetFds()[3]; f.Fd != 3 || string(f.GetPipe().GetData()) != "ping 4\n" {
		t.Errorf("fd 3 of the image is %v, want FIFO a's read end with ping 4 buffered", f)
	}
	fo.pp.send(t) // ping 5
	rp := restoreFrom(t, fo.p, dir)
	waitAllStopped(t, rp.pid)
	if err := unix.Kill(rp.pid, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	fo.pp.expect(t, rp)
	fo.pp.expect(t, rp)
	fo.pp.rounds(t, rp, 5)
	checkSequence(t, rp, "ping")
}

// TestFifoOutsideNotRejoinable: the image of TestFifoOutside says it
// comes from another boot. FIFO a held a ping at the dump that the test
// may have read since: restore refuses, naming the FIFO, the test's pid
// and --inherit-fd 3. With --inherit-fd 3 (the test's description of a)
// it goes on: FIFO b, empty at the dump, is reopened by its name with a
// warning naming the test's pid.
func TestFifoOutsideNotRejoinable(t *testing.T) {
	t.Parallel()
	fo := startFifoOutside(t)
	stopAndPing(t, fo.p, fo.pp) // ping 4
	dir := dumpKill(t, fo.p)
	editFds(t, dir, fo.p.pid, func(fds *pb.FdTable) { fds.BootId = "00000000-0000-4000-8000-000000000000" })
	_, e, code := runLazycr(t, "restore", "-D", dir)
	requireExit1(t, "restore", e, code, regexp.QuoteMeta(fmt.Sprintf("FIFO %s held outside the dump and not rejoinable", fo.path[0])),
		fmt.Sprintf("pid %d ", os.Getpid()), `--inherit-fd 3\b`)

	// A read-only description of FIFO a, as fd 3 was (the process checks).
	// Opened non-blocking so as not to wait for a writer (fifo(7)), then
	// blocking as fd 3 was.
	n, err := unix.Open(fo.path[0], unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	rd := os.NewFile(uintptr(n), fo.path[0])
	defer rd.Close()
	if err := unix.SetNonblock(n, false); err != nil {
		t.Fatal(err)
	}
	restore := exec.Command(lazycrPath, "restore", "-D", dir, "--inherit-fd", "3")
	restore.ExtraFiles = []*os.File{rd} // lazycr's fd 3
	var out, errOut strings.Builder
	restore.Stdout, restore.Stderr = &out, &errOut
	if err := restore.Run(); err != nil {
		t.Fatalf("lazycr restore --inherit-fd 3: %v\n%s", err, errOut.String())
	}
	if want := fmt.Sprintf("FIFO %s was also held by pid %d", fo.path[1], os.Getpid()); !strings.Contains(errOut.String(), want) {
		t.Errorf("restore does not say %q:\n%s", want, errOut.String())
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out.String()))
	if err != nil || pid != fo.p.pid {
		t.Fatalf("restore printed %q, want pid %d", out.String(), fo.p.pid)
	}
	rp := adopt(t, pid)
	rp.continueOutput(fo.p, true)
	waitAllStopped(t, rp.pid)
	if err := unix.Kill(rp.pid, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	fo.pp.expect(t, rp)
	fo.pp.rounds(t, rp, 3)
}
