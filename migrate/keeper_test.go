package migrate

import (
	"bytes"
	"errors"
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
	if err := f.k.HoldChild(f.u.Fd()); err != nil {
		t.Fatal(err)
	}
	f.k.Close()
	if err := f.keeperResult(t); err != nil {
		t.Errorf("RunKeeper = %v after the process exited", err)
	}
}

func FuzzParseKeeperMsg(f *testing.F) {
	f.Add([]byte("hold 123"), 2)
	f.Add([]byte("child"), 1)
	f.Add([]byte("release"), 0)
	f.Add([]byte("hold -1"), 2)
	f.Fuzz(func(t *testing.T, b []byte, nfds int) {
		kind, pid, err := parseKeeperMsg(b, nfds)
		if (err == nil) == (kind == 0) {
			t.Fatalf("parseKeeperMsg(%q, %d) = %v, %d, %v: error iff no kind", b, nfds, kind, pid, err)
		}
		switch kind {
		case keeperHold:
			if pid <= 0 || nfds != 2 {
				t.Fatalf("hold of pid %d with %d fds accepted", pid, nfds)
			}
		case keeperChild:
			if nfds != 1 || pid != 0 {
				t.Fatalf("child with %d fds accepted", nfds)
			}
		case keeperRelease:
			if nfds != 0 || pid != 0 {
				t.Fatalf("release with %d fds accepted", nfds)
			}
		}
	})
}
