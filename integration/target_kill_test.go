package integration

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestTargetKilledMidPush: the target lazycr (the lazy-pages handler) is
// SIGKILLed while most of the process's memory is still on the source. The
// kernel drops a userfaultfd's ranges when its last reference closes, and
// later faults there read zero pages: the copy must never run on them. It
// must be dead, with a log line saying why, and never report a wrong page;
// the original, kept stopped by the source once it gave up on the target,
// is then the one copy left, with all its memory (it runs on when let go).
func TestTargetKilledMidPush(t *testing.T) {
	t.Parallel()
	var killedAt time.Time
	hooked := make(chan struct{})
	kmsg := kernelLogFromNow(t)
	orig, src, dst, cp := interruptMidFetchWith(t, "2s", func(dst *lazyRun, pid int) {
		defer close(hooked)
		killedAt = time.Now()
		if err := dst.cmd.Process.Kill(); err != nil {
			t.Errorf("kill the target: %v", err)
		}
		<-dst.done
	})
	if code := dst.wait(t, lazycrTimeout); code != -1 {
		t.Errorf("target exit %d, want -1 (killed)", code)
	}
	<-hooked
	select {
	case <-cp.done:
		t.Logf("the copy pid %d died %v after its handler", cp.pid, time.Since(killedAt).Round(time.Millisecond))
	case <-time.After(goneTimeout):
		t.Fatalf("the copy pid %d still runs (state %s) without its handler", cp.pid, procState(cp.pid))
	}
	if b, _ := os.ReadFile(orig.errPath); strings.Contains(string(b), "verify FAIL") {
		t.Fatalf("the copy read wrong memory after its handler died:\n%s", b)
	}
	// Zeros where pointers were usually crash the program before it can
	// verify anything (measured: "segfault at 28 … in ld-linux"): the
	// kernel logs such a death (show_unhandled_signals).
	if l := kernelLogLine(t, kmsg, fmt.Sprintf("[%d]: segfault", cp.pid)); l != "" {
		t.Fatalf("the copy crashed on its memory after its handler died: %s", l)
	}
	_, e := dst.output()
	t.Logf("target:\n%s", e)
	if b, _ := os.ReadFile(orig.errPath); len(b) > 0 {
		t.Logf("the program's stderr:\n%s", b)
	}
	if !strings.Contains(e, "handler") || !strings.Contains(e, "killing pid") {
		t.Errorf("nothing on the target's stderr says the copy was killed because its handler died:\n%s", e)
	}
	// The source gives up on the target after its reconnect timeout and
	// keeps the original stopped: exactly one copy is left.
	if code := src.wait(t, lazycrTimeout); code == 0 {
		t.Errorf("source exit 0 although the target never said DONE")
	}
	requireStoppedOriginal(t, orig)
	// Let it go: it verifies its memory on (not checkSequence: the killed
	// copy wrote to the same file and may have reported rounds the
	// original now does again).
	if err := syscall.Kill(orig.pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	requireProgress(t, orig, "verify")
	if b, _ := os.ReadFile(orig.errPath); strings.Contains(string(b), "verify FAIL") {
		t.Fatalf("the original's memory is wrong:\n%s", b)
	}
}

// kernelLogFromNow opens the kernel log (/dev/kmsg) positioned after its
// last record, for kernelLogLine; -1 if it cannot be read.
func kernelLogFromNow(t *testing.T) int {
	t.Helper()
	fd, err := syscall.Open("/dev/kmsg", syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Logf("kernel log not checked: %v", err)
		return -1
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if _, err := syscall.Seek(fd, 0, 2 /* SEEK_END */); err != nil {
		t.Logf("kernel log not checked: seek: %v", err)
		return -1
	}
	return fd
}

// kernelLogLine returns the first record of the kernel log fd (see
// kernelLogFromNow) that contains sub, or "" if none does. Raw reads: each
// read(2) returns one record, EAGAIN after the last (an os.File would wait
// for more instead).
func kernelLogLine(t *testing.T, fd int, sub string) string {
	t.Helper()
	if fd < 0 {
		return ""
	}
	buf := make([]byte, 8192)
	for {
		n, err := syscall.Read(fd, buf)
		switch {
		case errors.Is(err, syscall.EPIPE): // a record was overwritten: go on
			continue
		case err != nil:
			if !errors.Is(err, syscall.EAGAIN) {
				t.Logf("kernel log: %v", err)
			}
			return ""
		case n <= 0:
			return ""
		}
		if l := string(buf[:n]); strings.Contains(l, sub) {
			return strings.TrimSpace(l)
		}
	}
}
