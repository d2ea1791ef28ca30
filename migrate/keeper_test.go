package migrate

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lazycr/lazycr/uffd"
	"golang.org/x/sys/unix"
)

// keeperFixture runs RunKeeper in this process on one end of a socketpair
// and gives the other end to a Keeper holding a child process (sleep) and
// a userfaultfd.
type keeperFixture struct {
	k      *Keeper
	child  *exec.Cmd
	pidfd  int
	u      *uffd.FD
	out    syncBuf
	result chan error
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newKeeperFixture(t *testing.T) *keeperFixture {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (userfaultfd, pidfd)")
	}
	f := &keeperFixture{result: make(chan error, 1)}
	f.child = exec.Command("sleep", "600")
	if err := f.child.Start(); err != nil {
		t.Skipf("no sleep to guard: %v", err)
	}
	t.Cleanup(func() {
		f.child.Process.Kill()
		f.child.Wait()
	})
	var err error
	if f.pidfd, err = unix.PidfdOpen(f.child.Process.Pid, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(f.pidfd) })
	if f.u, err = uffd.Open(0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.u.Close() })
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		f.result <- RunKeeper(fds[1], &f.out)
		unix.Close(fds[1])
	}()
	f.k = &Keeper{fd: fds[0], pid: os.Getpid()}
	t.Cleanup(func() { f.k.Close() })
	if err := f.k.Hold(f.child.Process.Pid, f.pidfd, f.u.Fd()); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *keeperFixture) keeperResult(t *testing.T) error {
	t.Helper()
	select {
	case err := <-f.result:
		return err
	case <-time.After(time.Minute):
		t.Fatal("RunKeeper did not return")
		return nil
	}
}

// TestKeeperKillsWhenHandlerDies: the handler's end closes without a
// release (what a SIGKILL of the handler does): the keeper kills the held
// process with SIGKILL and says so.
func TestKeeperKillsWhenHandlerDies(t *testing.T) {
	f := newKeeperFixture(t)
	if err := f.k.HoldChild(f.u.Fd()); err != nil { // any uffd will do
		t.Fatal(err)
	}
	// Its pid known (else the keeper waits for its first fault to know
	// whom to kill).
	if err := f.k.ChildPID(f.u.Fd(), f.child.Process.Pid); err != nil {
		t.Fatal(err)
	}
	f.k.Close()
	if err := f.keeperResult(t); !errors.Is(err, ErrHandlerDied) {
		t.Errorf("RunKeeper = %v, want ErrHandlerDied", err)
	}
	err := f.child.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("held process ended with %v, want killed by SIGKILL", err)
	}
	if !strings.Contains(f.out.String(), "killing pid") {
		t.Errorf("the keeper did not say it kills the process: %q", f.out.String())
	}
}

// TestKeeperRelease: a released keeper returns nil and leaves the process
// alone.
func TestKeeperRelease(t *testing.T) {
	f := newKeeperFixture(t)
	if err := f.k.Release(); err != nil {
		t.Fatal(err)
	}
	if err := f.keeperResult(t); err != nil {
		t.Errorf("RunKeeper = %v after release", err)
	}
	if err := unix.PidfdSendSignal(f.pidfd, 0, nil, 0); err != nil {
		t.Errorf("held process gone after a release: %v", err)
	}
	if f.out.String() != "" {
		t.Errorf("keeper said %q after a release", f.out.String())
	}
}

// TestKeeperProcessExited: the held process exits by itself; the handler's
// end then closes without a release, and nothing is killed.
func TestKeeperProcessExited(t *testing.T) {
	f := newKeeperFixture(t)
	f.child.Process.Signal(syscall.SIGTERM)
	f.child.Wait()
	// The keeper notices the exit through the pidfd; give it the chance
	// before the socket closes by asking it something (it answers in
	// order).
	if err := f.k.HoldMember(f.u.Fd(), f.child.Process.Pid, f.pidfd); err != nil {
		t.Fatal(err)
	}
	f.k.Close()
	if err := f.keeperResult(t); err != nil {
		t.Errorf("RunKeeper = %v after the process exited", err)
	}
}

// TestKeeperGuardsMembersAfterRootExit: the restored process exits while
// another process of its tree (a member held with its pid, and a forked
// child whose pid came later) still runs on lazy memory; when the handler
// then dies, the keeper kills them: they are no longer the root's
// descendants, but must not run on zero pages either.
func TestKeeperGuardsMembersAfterRootExit(t *testing.T) {
	f := newKeeperFixture(t)
	var others []*exec.Cmd
	for range 2 {
		c := exec.Command("sleep", "600")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
		others = append(others, c)
	}
	member, err := unix.PidfdOpen(others[0].Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(member)
	u2, err := uffd.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	defer u2.Close()
	if err := f.k.HoldMember(f.u.Fd(), others[0].Process.Pid, member); err != nil {
		t.Fatal(err)
	}
	if err := f.k.HoldChild(u2.Fd()); err != nil {
		t.Fatal(err)
	}
	if err := f.k.ChildPID(u2.Fd(), others[1].Process.Pid); err != nil {
		t.Fatal(err)
	}
	f.child.Process.Signal(syscall.SIGTERM) // the root exits
	f.child.Wait()
	f.k.Close()
	if err := f.keeperResult(t); !errors.Is(err, ErrHandlerDied) {
		t.Errorf("RunKeeper = %v, want ErrHandlerDied", err)
	}
	for _, c := range others {
		err := c.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Errorf("pid %d ended with %v, want killed by SIGKILL", c.Process.Pid, err)
		}
	}
	if !strings.Contains(f.out.String(), fmt.Sprintf("pid %d", others[1].Process.Pid)) {
		t.Errorf("the keeper did not name the processes it kills: %q", f.out.String())
	}
}

const faultingChildEnv = "LAZYCR_MIGRATE_TEST_FAULTING_CHILD"

// runFaultingChildIfRequested is the other process of
// TestKeeperKillsUnknownChildAtFault: it creates a uffd and maps a page,
// prints "fd addr", and once a line comes on stdin reads the page and
// prints what it read.
func runFaultingChildIfRequested() {
	if os.Getenv(faultingChildEnv) != "1" {
		return
	}
	r, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK, 0, 0)
	if errno != 0 {
		fmt.Println("userfaultfd:", errno)
		os.Exit(1)
	}
	addr, _, errno := unix.Syscall6(unix.SYS_MMAP, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uintptr(0), 0)
	if errno != 0 {
		fmt.Println("mmap:", errno)
		os.Exit(1)
	}
	fmt.Printf("%d %d\n", r, addr)
	var line string
	fmt.Scanln(&line)
	// Its own reference goes, as restore closes the restored process's.
	unix.Close(int(r))
	// write(2) from the page reads it (a fault the uffd sees, as a
	// user-space read would).
	fmt.Print("read ")
	unix.Syscall(unix.SYS_WRITE, 1, addr, 1)
	os.Exit(0)
}

// TestKeeperKillsUnknownChildAtFault: the handler dies while the keeper
// holds the uffd of a forked child whose pid was never learnt (its parent
// exited before). The keeper reads that uffd itself: the child's first
// fault on a page that never arrived gets it killed, never a zero page.
func TestKeeperKillsUnknownChildAtFault(t *testing.T) {
	f := newKeeperFixture(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), faultingChildEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out syncBuf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := false
	defer func() {
		if !waited {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	br := bufio.NewReader(stdout)
	var childFd int
	var addr uint64
	if _, err := fmt.Fscanln(br, &childFd, &addr); err != nil {
		t.Fatalf("read the child's fd and address: %v", err)
	}
	copied := make(chan struct{})
	go func() { io.Copy(&out, br); close(copied) }()
	pidfd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := unix.PidfdGetfd(pidfd, childFd, 0)
	unix.Close(pidfd)
	if err != nil {
		t.Fatal(err)
	}
	u, err := uffd.FromFd(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if _, _, err := u.API(uffd.FeaturesNonCooperative | uffd.FeatureThreadID); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Register(addr, 4096, uffd.ModeMissing); err != nil {
		t.Fatal(err)
	}
	if err := f.k.HoldChild(u.Fd()); err != nil { // its pid never follows
		t.Fatal(err)
	}
	u.Close() // the handler's reference goes with the handler
	f.k.Close()
	if err := f.child.Wait(); err == nil {
		t.Errorf("the held process was not killed when the handler died")
	}
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	<-copied // to the end before Wait closes the pipe (os/exec)
	err = cmd.Wait()
	waited = true
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("the child ended with %v (output %q), want killed by SIGKILL at its fault", err, out.String())
	}
	if o := out.String(); o != "read " {
		t.Errorf("the child's output %q, want %q: it read its page without a handler", o, "read ")
	}
	if err := f.keeperResult(t); !errors.Is(err, ErrHandlerDied) {
		t.Errorf("RunKeeper = %v, want ErrHandlerDied", err)
	}
	if want := fmt.Sprintf("pid %d (forked during the lazy phase) touched a page that never arrived", cmd.Process.Pid); !strings.Contains(f.out.String(), want) {
		t.Errorf("the keeper did not say %q: %q", want, f.out.String())
	}
}

func FuzzParseKeeperMsg(f *testing.F) {
	f.Add([]byte("hold 123"), 2)
	f.Add([]byte("child"), 1)
	f.Add([]byte("child 77"), 2)
	f.Add([]byte("pid 0 77"), 1)
	f.Add([]byte("release"), 0)
	f.Add([]byte("hold -1"), 2)
	f.Add([]byte("pid 01 7"), 1)
	f.Fuzz(func(t *testing.T, b []byte, nfds int) {
		m, err := parseKeeperMsg(b, nfds)
		if (err == nil) == (m.kind == 0) {
			t.Fatalf("parseKeeperMsg(%q, %d) = %+v, %v: error iff no kind", b, nfds, m, err)
		}
		switch m.kind {
		case keeperHold:
			if m.pid <= 0 || nfds != 2 {
				t.Fatalf("hold of pid %d with %d fds accepted", m.pid, nfds)
			}
		case keeperChild:
			if (m.pid == 0 && nfds != 1) || (m.pid != 0 && (m.pid < 0 || nfds != 2)) {
				t.Fatalf("child of pid %d with %d fds accepted", m.pid, nfds)
			}
		case keeperPID:
			if m.pid <= 0 || m.index < 0 || nfds != 1 {
				t.Fatalf("pid %d for child %d with %d fds accepted", m.pid, m.index, nfds)
			}
		case keeperRelease:
			if nfds != 0 || m.pid != 0 {
				t.Fatalf("release with %d fds accepted", nfds)
			}
		}
	})
}
