package inject

import (
	"bufio"
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

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// deadline bounds every wait for a tracee; it is a failure deadline, never a
// synchronisation delay.
const deadline = 10 * time.Second

func requireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: ptrace of processes and /proc/PID/mem")
	}
}

// buildC compiles a C program into a temporary directory.
func buildC(tb testing.TB, src string, flags ...string) string {
	tb.Helper()
	requireRoot(tb)
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		tb.Skip("gcc not installed: the tracee programs are built from C at test time")
	}
	dir := tb.TempDir()
	c := filepath.Join(dir, "prog.c")
	bin := filepath.Join(dir, "prog")
	if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
		tb.Fatal(err)
	}
	args := append([]string{"-O1", "-o", bin, c}, flags...)
	if out, err := exec.Command(gcc, args...).CombinedOutput(); err != nil {
		tb.Fatalf("gcc: %v\n%s", err, out)
	}
	return bin
}

// prog is a running test program whose stdout lines are collected.
type prog struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	lines []string
	more  chan struct{} // signalled on every new line
	eof   chan struct{}
}

func start(tb testing.TB, bin string, args ...string) *prog {
	tb.Helper()
	p := &prog{cmd: exec.Command(bin, args...), more: make(chan struct{}, 1), eof: make(chan struct{})}
	p.cmd.Stderr = os.Stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		tb.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() {
		defer close(p.eof)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
			select {
			case p.more <- struct{}{}:
			default:
			}
		}
	}()
	tb.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		_ = p.stdin.Close()
		<-p.eof
		_ = p.cmd.Wait()
	})
	return p
}

func (p *prog) pid() int { return p.cmd.Process.Pid }

// waitLine waits for a line after index from that satisfies ok and returns
// it and its index.
func (p *prog) waitLine(tb testing.TB, from int, what string, ok func(string) bool) (string, int) {
	tb.Helper()
	timeout := time.After(deadline)
	for {
		p.mu.Lock()
		for i := from; i < len(p.lines); i++ {
			if ok(p.lines[i]) {
				l := p.lines[i]
				p.mu.Unlock()
				return l, i
			}
		}
		from = len(p.lines)
		p.mu.Unlock()
		select {
		case <-p.more:
		case <-p.eof:
			p.mu.Lock()
			n := len(p.lines)
			p.mu.Unlock()
			if n == from {
				tb.Fatalf("pid %d: output ended waiting for %s; lines %q", p.pid(), what, p.tail())
			}
		case <-timeout:
			tb.Fatalf("pid %d: no %s within %v; last lines %q", p.pid(), what, deadline, p.tail())
		}
	}
}

func (p *prog) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.lines)
}

func (p *prog) tail() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lines[max(0, len(p.lines)-5):]
}

func prefixed(pre string) func(string) bool {
	return func(l string) bool { return strings.HasPrefix(l, pre) }
}

// field returns the integer after key in a line of "key value" pairs.
func field(tb testing.TB, line, key string) uint64 {
	tb.Helper()
	f := strings.Fields(line)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == key {
			v, err := strconv.ParseUint(f[i+1], 0, 64)
			if err != nil {
				tb.Fatalf("line %q: %s: %v", line, key, err)
			}
			return v
		}
	}
	tb.Fatalf("line %q has no %s", line, key)
	return 0
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// inSyscall reports whether thread tid of pid is blocked in syscall nr
// (first field of /proc/PID/task/TID/syscall).
func inSyscall(pid, tid int, nr uintptr) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/syscall", pid, tid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return len(f) > 0 && f[0] == strconv.Itoa(int(nr))
}

func statusField(tb testing.TB, pid int, key string) string {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k == key {
			return strings.TrimSpace(v)
		}
	}
	tb.Fatalf("pid %d: no %s in status", pid, key)
	return ""
}

func newTracer(tb testing.TB) *Tracer {
	tb.Helper()
	t, err := NewTracer()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = t.Close() })
	return t
}

func seize(tb testing.TB, t *Tracer, pid int) *Process {
	tb.Helper()
	p, err := t.Seize(pid)
	if err != nil {
		tb.Fatalf("seize pid %d: %v", pid, err)
	}
	tb.Cleanup(func() {
		if err := p.Release(); err != nil && !errors.Is(err, ErrReleased) && !errors.Is(err, ErrClosed) {
			tb.Errorf("release pid %d: %v", pid, err)
		}
	})
	return p
}

// assertRunning checks that pid is no longer traced and not stopped.
func assertRunning(tb testing.TB, pid int) {
	tb.Helper()
	if tr := statusField(tb, pid, "TracerPid"); tr != "0" {
		tb.Errorf("pid %d: TracerPid %s after release", pid, tr)
	}
	tasks, _ := listTasks(pid)
	for _, tid := range tasks {
		waitFor(tb, fmt.Sprintf("tid %d to leave the tracing stop", tid), func() bool {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
			if err != nil {
				return true // exited
			}
			s := string(b)
			st := s[strings.LastIndexByte(s, ')')+2]
			return st != 't' && st != 'T'
		})
	}
}
