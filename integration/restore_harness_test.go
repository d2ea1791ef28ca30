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

	"golang.org/x/sys/unix"
)

// Helpers of the restore tests. A restored process is not our child: it is
// an orphan, so its end is seen through a pidfd and it is killed with
// kill(2) when the test ends.

// goneTimeout bounds the wait for a killed process's pid to be free again
// (PID 1 of this container reaps orphans slowly).
const goneTimeout = 30 * time.Second

// dumpKill checkpoints p with a plain `lazycr dump` (which kills it), reaps
// it and waits until its pid is free. It returns the image directory.
func dumpKill(t *testing.T, p *proc, extra ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "img")
	args := append([]string{"dump", "--pid", strconv.Itoa(p.pid), "-D", dir}, extra...)
	out, errOut, code := runLazycr(t, args...)
	if code != 0 {
		t.Fatalf("lazycr %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
	}
	select {
	case <-p.done:
	case <-time.After(goneTimeout):
		t.Fatalf("pid %d still runs %v after `lazycr dump` (state %s)", p.pid, goneTimeout, procState(p.pid))
	}
	waitGone(t, p.pid)
	// An image that the test does not restore leaves its held lock, which
	// would drop SYNs to its listeners' ports: a later test's server on a
	// reused ephemeral port would hang.
	t.Cleanup(func() { removeHeldOf(t, p.pid) })
	return dir
}

// waitGone waits until no process or thread has id pid.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(goneTimeout)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d is still taken %v after its process was killed (state %s)", pid, goneTimeout, procState(pid))
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
}

// restoreFrom runs `lazycr restore -D dir extra...`, which must succeed, and
// returns the restored process. Its output continues orig's: the same files,
// and the ticks orig wrote so far count as already seen.
func restoreFrom(t *testing.T, orig *proc, dir string, extra ...string) *proc {
	t.Helper()
	progress(t, orig) // consume every tick orig wrote before it was frozen
	args := append([]string{"restore", "-D", dir}, extra...)
	out, errOut, code := runLazycr(t, args...)
	if code != 0 {
		t.Fatalf("lazycr %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil || pid <= 0 {
		t.Fatalf("lazycr %s: stdout %q is not a pid", strings.Join(args, " "), out)
	}
	p := adopt(t, pid)
	p.continueOutput(orig, true)
	t.Logf("restored pid %d (image of pid %d)", pid, orig.pid)
	return p
}

// adopt watches pid, a process that is not our child: done closes when it
// exits, and it is killed when t ends.
func adopt(t testing.TB, pid int) *proc {
	t.Helper()
	p := &proc{pid: pid, done: make(chan struct{}), ticks: map[string]uint64{}}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		p.waitErr = fmt.Errorf("pidfd_open pid %d: %w", pid, err)
		close(p.done)
		return p
	}
	go func() {
		defer close(p.done)
		defer unix.Close(pidfd)
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		for {
			_, err := unix.Poll(fds, -1)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				p.waitErr = fmt.Errorf("poll pidfd of pid %d: %w", pid, err)
			} else {
				p.waitErr = fmt.Errorf("restored pid %d exited", pid)
			}
			return
		}
	}()
	t.Cleanup(func() {
		unix.Kill(pid, unix.SIGKILL)
		<-p.done
	})
	return p
}

// checkSequence checks that each of keys (every key if none is given) in
// p's output counts 1, 2, 3, … with no gap and no repeat, across the dump
// and the restore.
func checkSequence(t *testing.T, p *proc, keys ...string) {
	t.Helper()
	checkSequenceFrom(t, p, 0, keys...)
}

// checkSequenceFrom is checkSequence over the lines written from byte off
// on (0: the whole output, after the report); the first tick of each key
// there may have any number.
func checkSequenceFrom(t *testing.T, p *proc, off int64, keys ...string) {
	t.Helper()
	f, err := os.Open(p.outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(off, 0); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(f)
	if off == 0 {
		if _, err := r.ReadString('\n'); err != nil { // the report
			t.Fatal(err)
		}
	}
	next := map[string]uint64{}
	first := map[string]bool{}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			break // a partial last line is still being written
		}
		var key string
		var n uint64
		if _, err := fmt.Sscanf(line, "tick %s %d\n", &key, &n); err != nil {
			t.Fatalf("bad tick line %q: %v", line, err)
		}
		if len(keys) > 0 && !slices.Contains(keys, key) {
			continue
		}
		if want := next[key] + 1; n != want && (off == 0 || first[key]) {
			t.Errorf("tick %s: %d follows %d (a skipped or repeated tick)", key, n, next[key])
		}
		next[key], first[key] = n, true
	}
}

// requireExit checks a refused lazycr run: exit 1 and stderr matching every
// pattern.
func requireExit1(t *testing.T, what, errOut string, code int, patterns ...string) {
	t.Helper()
	if code != 1 {
		t.Errorf("%s: exit %d, want 1; stderr:\n%s", what, code, errOut)
	}
	for _, pat := range patterns {
		if !regexp.MustCompile(pat).MatchString(errOut) {
			t.Errorf("%s: stderr does not match %q:\n%s", what, pat, errOut)
		}
	}
}

// procsRunning lists the pids whose executable is exe.
func procsRunning(t *testing.T, exe string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && strings.TrimSuffix(l, " (deleted)") == exe {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	return pids
}

// startCmd is start for a prepared command (namespaces, other stdout): it
// runs cmd, reaps it in the background and kills it when t ends. Unless
// cmd.Stdout is set, stdout and stderr are files as with start.
func startCmd(t testing.TB, cmd *exec.Cmd) *proc {
	t.Helper()
	dir := t.TempDir()
	p := &proc{
		outPath: filepath.Join(dir, "stdout"),
		errPath: filepath.Join(dir, "stderr"),
		done:    make(chan struct{}),
		ticks:   map[string]uint64{},
		cmd:     cmd,
	}
	if cmd.Stdout == nil {
		stdout, err := os.OpenFile(p.outPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer stdout.Close()
		cmd.Stdout = stdout
	}
	stderr, err := os.OpenFile(p.errPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	p.pid = cmd.Process.Pid
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
	})
	return p
}

// waitTick waits until key's counter in p's output reaches at least n (for
// a tick caused by something the test did, which may already be in).
func waitTick(t *testing.T, p *proc, key string, n uint64) {
	t.Helper()
	deadline := time.Now().Add(progressTimeout)
	for progress(t, p)[key] < n {
		// A program may tick its last and exit between the read above
		// and this check: its output file has the tick by then.
		if p.exited() && progress(t, p)[key] < n {
			t.Fatalf("pid %d exited (%v); stderr:\n%s", p.pid, p.waitErr, p.stderr())
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d: tick %s does not reach %d within %v (state %s)", p.pid, key, n, progressTimeout, procState(p.pid))
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
}

// restoreAdopt runs `lazycr restore -D dir`, which must succeed, and watches
// the process whose pid it printed (for programs that write no report;
// restoreFrom also carries a reporting program's output on).
func restoreAdopt(t *testing.T, dir string) *proc {
	t.Helper()
	out, errOut, code := runLazycr(t, "restore", "-D", dir)
	if code != 0 {
		t.Fatalf("lazycr restore -D %s: exit %d\nstdout:\n%s\nstderr:\n%s", dir, code, out, errOut)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("lazycr restore: stdout %q is not a pid", out)
	}
	return adopt(t, pid)
}

// waitRepliesQueued waits until the server side of the local TCP
// connection on port has bytes queued to send (replies in flight), so
// that a dump catches them in the socket's send queue.
func waitRepliesQueued(t *testing.T, port int, what string) {
	t.Helper()
	deadline := time.Now().Add(progressTimeout)
	for {
		if tx, _, ok := tcpQueues(t, false, port); ok && tx > 0 {
			t.Logf("at dump: %s's socket has %d bytes to send", what, tx)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never had replies queued", what)
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
}
