package integration

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestQA2UnixDgramReceiver: a syslog-like Python receiver on a bound unix
// datagram socket (testdata/progs/qa2_dgramrecv.py) gets 20000 numbered
// datagrams from an unnamed sender outside the dump (the test) while it is
// checkpointed twice with --leave-running and then dumped (killed) and
// restored: the datagrams queued at each dump come back in order, none is
// lost or repeated (the receiver exits 1 on any gap). While the receiver
// is gone the sender retries, as a syslog client would.
func TestQA2UnixDgramReceiver(t *testing.T) {
	t.Parallel()
	needRoot(t)
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skipf("python3 not installed: %v", err)
	}
	script, err := filepath.Abs(filepath.Join("testdata", "progs", "qa2_dgramrecv.py"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "log.sock")
	p := startCmd(t, exec.Command(py, script, path))
	var r struct {
		Pid int `json:"pid"`
	}
	waitReport(t, p, &r)
	if r.Pid != p.pid {
		t.Fatalf("receiver reports pid %d, started as %d", r.Pid, p.pid)
	}

	const total = 20000
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	stopOnce := sync.OnceFunc(func() { close(stop) })
	// The last tenth waits for the restore, so every dump happens in the
	// middle of the stream.
	release := make(chan struct{})
	letGo := sync.OnceFunc(func() { close(release) })
	sent := make(chan error, 1)
	go func() {
		defer unix.Close(fd)
		to := &unix.SockaddrUnix{Name: path}
		for i := 1; i <= total; {
			if i == total*9/10 {
				select {
				case <-release:
				case <-stop:
					sent <- errors.New("stopped")
					return
				}
			}
			select {
			case <-stop:
				sent <- errors.New("stopped")
				return
			default:
			}
			err := unix.Sendto(fd, []byte(strconv.Itoa(i)), 0, to)
			switch {
			case err == nil:
				i++
				if i%10 == 0 {
					time.Sleep(time.Millisecond) // pacing, not synchronisation
				}
			case errors.Is(err, unix.ECONNREFUSED), errors.Is(err, unix.ENOENT), errors.Is(err, unix.EAGAIN):
				time.Sleep(time.Millisecond) // the receiver is being dumped or restored: retry
			default:
				sent <- fmt.Errorf("send datagram %d: %w", i, err)
				return
			}
		}
		sent <- nil
	}()
	t.Cleanup(stopOnce)

	requireProgress(t, p, "seq")
	dumpLeaveRunning(t, p.pid)
	dumpLeaveRunning(t, p.pid)
	requireProgress(t, p, "seq")
	rp := restoreFrom(t, p, dumpKill(t, p))
	letGo()

	select {
	case err := <-sent:
		if err != nil {
			t.Fatalf("sender: %v", err)
		}
	case <-time.After(lazycrTimeout):
		out, _ := os.ReadFile(rp.outPath)
		t.Fatalf("the sender did not finish within %v; the receiver (state %s) wrote:\n%s%s", lazycrTimeout, procState(rp.pid), out, rp.stderr())
	}
	lazyWaitTick(t, rp, "seq", total/500)
	checkSequence(t, rp, "seq")
	requireRunning(t, rp.pid)
}
