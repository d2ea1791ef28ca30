package uffd

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/lazycr/lazycr/inject"
	"golang.org/x/sys/unix"
)

// forkProg reads lazy pages 0..15, forks; the child reads 16..63 in a
// scattered order and exits; the parent waits for it and reads 16..63
// (installed in both by the child's faults). Every page must hold its own
// address and byte k+1 at offset 100 (see pattern). The exit status says
// which check failed.
const forkProg = `
#include <stdint.h>
#include <unistd.h>
#include <sys/wait.h>
#define BASE 0x200000000UL
#define PS 4096
static int ok(int k) {
	volatile unsigned char *p = (unsigned char *)(BASE + (unsigned long)k * PS);
	return *(volatile uint64_t *)p == (uint64_t)(unsigned long)p && p[100] == (unsigned char)(k + 1);
}
int main(void) {
	for (int k = 0; k < 16; k++)
		if (!ok(k)) return 10;
	pid_t c = fork();
	if (c < 0) return 11;
	if (c == 0) {
		for (int i = 0; i < 48; i++)
			if (!ok(16 + (i * 29) % 48)) _exit(20);
		_exit(0);
	}
	int st;
	if (waitpid(c, &st, 0) != c) return 12;
	if (!WIFEXITED(st)) return 13;
	if (WEXITSTATUS(st) != 0) return WEXITSTATUS(st);
	for (int k = 16; k < 64; k++)
		if (!ok(k)) return 30;
	return 0;
}
`

// TestHandlerFork serves a real process that forks: the child's uffd
// (from the FORK event) is served with the parent's state, a page requested
// for the child is installed in both, and Run completes when neither needs
// a page.
func TestHandlerFork(t *testing.T) {
	const pages = 64
	ws, runErr, h, src := runForker(t)
	if !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("workload ended with %v (exit status %d)", ws, ws.ExitStatus())
	}
	if runErr != nil {
		t.Errorf("Run = %v", runErr)
	}
	s := h.Stats()
	// 16 faults before the fork in the parent, 48 in the child; the parent
	// finds 16..63 installed by the child's requests.
	if s.Faults != pages || s.Requests != pages || s.Pages.Fault != pages || s.Bytes != (pages+48)*PageSize {
		t.Errorf("stats %+v", s)
	}
	for a, n := range src.requested {
		if n != 1 {
			t.Errorf("page %#x requested %d times", a, n)
		}
	}
	tr2 := h.Trace()
	// The child's member learns its pid from its first fault (the FORK
	// event comes before the child has one): no record may name pid 0,
	// and some must name the child.
	child := 0
	for _, f := range tr2.Faults {
		switch {
		case f.PID == 0:
			t.Errorf("fault at %#x recorded for pid 0", f.Addr)
		case f.PID != tr2.PID:
			child++
		}
	}
	if child != 48 {
		t.Errorf("%d faults recorded for the child, want 48", child)
	}
	t.Logf("next-page faults %d of %d\n%s", Summarize(tr2.Faults).NextPage, len(tr2.Faults), s)
}

// forkZeroProg forks before touching its lazy pages; the child reads pages
// 0..31 (the source reads them as zeros: installed in both) and exits, the
// parent then reads 0..63. Every page must read as zeros.
const forkZeroProg = `
#include <stdint.h>
#include <unistd.h>
#include <sys/wait.h>
#define BASE 0x200000000UL
#define PS 4096
static int zero(int k) {
	volatile uint64_t *p = (uint64_t *)(BASE + (unsigned long)k * PS);
	for (int i = 0; i < PS / 8; i++)
		if (p[i]) return 0;
	return 1;
}
int main(void) {
	pid_t c = fork();
	if (c < 0) return 11;
	if (c == 0) {
		for (int k = 0; k < 32; k++)
			if (!zero(k)) _exit(20);
		_exit(0);
	}
	int st;
	if (waitpid(c, &st, 0) != c || !WIFEXITED(st)) return 12;
	if (WEXITSTATUS(st) != 0) return WEXITSTATUS(st);
	for (int k = 0; k < 64; k++)
		if (!zero(k)) return 30;
	return 0;
}
`

// TestHandlerForkSourceZero: pages the source read as zeros, installed in
// a parent and its child by one answer, count once as SourceZero, as they
// count once as faults (QA4 F2: each member counted them, and
// pages_source_zero exceeded the pages that arrived).
func TestHandlerForkSourceZero(t *testing.T) {
	const pages = 64
	ws, runErr, h, _ := runProg(t, forkZeroProg, func(s *fakeSource) { s.zeros = true })
	if !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("workload ended with %v (exit status %d)", ws, ws.ExitStatus())
	}
	if runErr != nil {
		t.Errorf("Run = %v", runErr)
	}
	s := h.Stats()
	if s.Pages.Fault != pages || s.Pages.SourceZero != pages || s.Bytes != 0 {
		t.Errorf("pages fault %d, source zero %d, bytes %d: want %d, %d, 0\n%s", s.Pages.Fault, s.Pages.SourceZero, s.Bytes, pages, pages, s)
	}
}

// TestHandlerForkAdoptFails: the child's uffd cannot be adopted. Its lazy
// pages must not read as zeros (the child would _exit(20)): they are
// poisoned, the child dies of SIGBUS on the first one and the parent
// reports that (exit 13).
func TestHandlerForkAdoptFails(t *testing.T) {
	adoptFork = func(fd int) (*FD, error) {
		unix.Close(fd)
		return nil, errors.New("adoption refused by the test")
	}
	defer func() { adoptFork = FromFd }()
	ws, runErr, _, _ := runForker(t)
	if !ws.Exited() || ws.ExitStatus() != 13 {
		t.Errorf("workload ended with %v (exit status %d), want exit 13 (child killed by a signal; 20 = child read zeros)", ws, ws.ExitStatus())
	}
	t.Logf("Run = %v", runErr)
	if errors.Is(runErr, ErrExited) {
		t.Errorf("Run = %v: a child poisoned by the handler did not end on its own", runErr)
	}
}

// quitProg reads lazy pages 0..3 and exits with status 5: the other 60
// are never needed.
const quitProg = `
#include <stdint.h>
#define BASE 0x200000000UL
#define PS 4096
int main(void) {
	for (int k = 0; k < 4; k++) {
		volatile unsigned char *p = (unsigned char *)(BASE + (unsigned long)k * PS);
		if (*(volatile uint64_t *)p != (uint64_t)(unsigned long)p || p[100] != (unsigned char)(k + 1))
			return 10;
	}
	return 5;
}
`

// TestHandlerProcessExits: the process exits with most of its lazy pages
// never needed. Run returns an *ExitedError (ErrExited) counting them: a
// finished migration, not a failure.
func TestHandlerProcessExits(t *testing.T) {
	ws, runErr, _, _ := runProg(t, quitProg)
	if !ws.Exited() || ws.ExitStatus() != 5 {
		t.Errorf("workload ended with %v (exit status %d), want 5", ws, ws.ExitStatus())
	}
	var ex *ExitedError
	if !errors.As(runErr, &ex) || !errors.Is(runErr, ErrExited) || ex.Unneeded != 60 {
		t.Fatalf("Run = %v, want an ExitedError with 60 pages never needed", runErr)
	}
}

// runForker runs forkProg served by a Handler until the workload exits and
// Run returns.
func runForker(t *testing.T) (unix.WaitStatus, error, *Handler, *fakeSource) {
	t.Helper()
	return runProg(t, forkProg)
}

// runProg runs the C program prog on 64 lazy pages at 0x200000000 served
// by a Handler until the workload exits and Run returns.
func runProg(t *testing.T, prog string, setup ...func(*fakeSource)) (unix.WaitStatus, error, *Handler, *fakeSource) {
	t.Helper()
	needRoot(t)
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("no gcc to build the workload")
	}
	const base, pages = 0x200000000, 64
	dir := t.TempDir()
	bin := filepath.Join(dir, "forker")
	if err := os.WriteFile(bin+".c", []byte(prog), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(gcc, "-O2", "-static", "-o", bin, bin+".c").CombinedOutput(); err != nil {
		if out2, err2 := exec.Command(gcc, "-O2", "-o", bin, bin+".c").CombinedOutput(); err2 != nil {
			t.Fatalf("gcc: %v\n%s\n%s", err2, out, out2)
		}
	}
	tr, err := inject.NewTracer()
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	p, err := tr.Spawn(bin, []string{bin}, nil)
	if err != nil {
		t.Fatal(err)
	}
	released := false
	defer func() {
		if !released {
			p.Kill()
		}
	}()
	if _, err := p.Syscall(p.Pid, unix.SYS_MMAP, base, pages*uintptr(PageSize), unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, ^uintptr(0), 0); err != nil {
		t.Fatal(err)
	}
	rfd, err := p.Syscall(p.Pid, unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	pidfd, err := unix.PidfdOpen(p.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	ufd, err := unix.PidfdGetfd(pidfd, int(rfd), 0)
	unix.Close(pidfd)
	if err != nil {
		t.Fatal(err)
	}
	// The process must not keep a reference: the uffd is released (and
	// the ranges unregistered) only when its last fd is closed.
	if _, err := p.Syscall(p.Pid, unix.SYS_CLOSE, rfd); err != nil {
		unix.Close(ufd)
		t.Fatal(err)
	}
	fd, err := FromFd(ufd)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := fd.API(FeaturesNonCooperative | FeatureThreadID); err != nil {
		fd.Close()
		t.Fatal(err)
	}
	src := newFakeSource(base, pattern(base, pages), false)
	for _, f := range setup {
		f(src)
	}
	t.Cleanup(src.close)
	h, err := NewHandler(fd, HandlerConfig{Regions: []Region{{Start: base, End: base + pages*PageSize, Lazy: []Run{{Addr: base, Npages: pages}}}},
		Source: src, PID: p.Pid, Trace: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	run := make(chan error, 1)
	go func() { run <- h.Run(context.Background()) }()
	if err := p.Release(); err != nil {
		t.Fatal(err)
	}
	released = true
	exited := make(chan unix.WaitStatus, 1)
	go func() {
		var ws unix.WaitStatus
		for {
			_, err := unix.Wait4(p.Pid, &ws, 0, nil)
			if err != unix.EINTR {
				break
			}
		}
		exited <- ws
	}()
	var ws unix.WaitStatus
	select {
	case ws = <-exited:
	case <-time.After(hang):
		unix.Kill(p.Pid, unix.SIGKILL)
		<-exited
		t.Fatal("workload hung")
	}
	var runErr error
	select {
	case runErr = <-run:
	case <-time.After(hang):
		t.Fatal("Run did not complete")
	}
	return ws, runErr, h, src
}
