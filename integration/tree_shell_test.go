package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestTreeShellLoop dumps and restores `bash -c 'i=0; while true; do sleep
// 0.2; echo $((i++)); done'` (a `sleep` child is usually mid-run at dump
// time, or just exited and not yet reaped): after restore the count must
// carry on in the same file, with no number missing or repeated.
func TestTreeShellLoop(t *testing.T) {
	t.Parallel()
	shellLoop(t, "i=0; while true; do sleep 0.2; echo $((i++)); done", 0, false)
}

// TestTreeShellPipeline is TestTreeShellLoop through a pipeline, `while
// …; do echo $((i++)); sleep 0.05; done | cat`: the loop's subshell, its
// sleep and cat are members, with a pipe between them (usually holding a
// number cat has not read yet).
func TestTreeShellPipeline(t *testing.T) {
	t.Parallel()
	shellLoop(t, "i=0; while true; do echo $((i++)); sleep 0.05; done | cat", 1, false)
}

// TestTreeShellJobControl runs the loop as the second element of a
// pipeline in a shell with job control (set -m) that leads its own
// session: the pipeline is a process group whose leader, `true`, has
// exited. After restore the shell leads its session again and the loop's
// subshell is in that leaderless group (made by a helper with the
// leader's pid).
func TestTreeShellJobControl(t *testing.T) {
	t.Parallel()
	shellLoop(t, "set -m; i=0; true | while true; do sleep 0.05; echo $((i++)); done", -1, true)
}

// shellLoop runs `bash -c script`, whose stdout is a file of consecutive
// numbers from 0, dumps and restores it three times at different points,
// and checks the numbers carry on with none missing or repeated. The image
// must hold pipes pipes between members (any number if pipes < 0). With setsid the shell leads a
// session of its own. Every shell of the tree must come back in its session
// and process group.
func shellLoop(t *testing.T, script string, pipes int, setsid bool) {
	needRoot(t)
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash not found")
	}
	for round := range 3 {
		t.Run(strconv.Itoa(round), func(t *testing.T) {
			t.Parallel()
			out := filepath.Join(t.TempDir(), "count")
			f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bash, "-c", script)
			cmd.Stdout = f
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: setsid}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			f.Close()
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			t.Cleanup(func() { cmd.Process.Kill(); <-done })
			pid := cmd.Process.Pid
			// Different rounds freeze at different points of the loop.
			waitCount(t, out, 2+round)

			dir := filepath.Join(t.TempDir(), "img")
			args := []string{"dump", "--pid", strconv.Itoa(pid), "-D", dir}
			if o, e, code := runLazycr(t, args...); code != 0 {
				t.Fatalf("lazycr %s: exit %d\n%s%s", strings.Join(args, " "), code, o, e)
			}
			<-done
			img := show(t, dir)
			var members []int
			for _, p := range img.Tree.GetProcesses() {
				members = append(members, int(p.Pid))
				t.Logf("member pid %d ppid %d comm %s zombie %v", p.Pid, p.Ppid, p.Comm, p.Zombie)
			}
			if n := len(img.Tree.Pipes); pipes >= 0 && n != pipes {
				t.Errorf("the image has %d pipes between members, want %d: %v", n, pipes, img.Tree.Pipes)
			}
			for _, m := range members {
				waitGone(t, m)
			}
			n := len(readCount(t, out))
			o, e, code := runLazycr(t, "restore", "-D", dir)
			if code != 0 {
				t.Fatalf("lazycr restore: exit %d\n%s%s", code, o, e)
			}
			if got := strings.TrimSpace(o); got != strconv.Itoa(pid) {
				t.Fatalf("restored as pid %s, want %d", got, pid)
			}
			t.Cleanup(func() {
				for _, m := range members {
					unix.Kill(m, unix.SIGKILL)
				}
			})
			for _, p := range img.Tree.GetProcesses() {
				if p.Comm != "bash" {
					continue // a sleep ends and is replaced
				}
				if sid, pgid := statField(t, int(p.Pid), 6), statField(t, int(p.Pid), 5); sid != fmt.Sprint(p.Sid) || pgid != fmt.Sprint(p.Pgid) {
					t.Errorf("pid %d (bash) is in session %s, group %s after restore; the image has %d, %d", p.Pid, sid, pgid, p.Sid, p.Pgid)
				}
			}
			waitCount(t, out, n+3)
			got := readCount(t, out)
			for i, v := range got {
				if v != i {
					t.Fatalf("count %v: line %d is %d", got, i, v)
				}
			}
		})
	}
}

// readCount returns the numbers the loop wrote, one per complete line.
func readCount(t *testing.T, path string) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for len(b) > 0 {
		line, rest, ok := bytes.Cut(b, []byte("\n"))
		if !ok {
			break
		}
		v, err := strconv.Atoi(string(line))
		if err != nil {
			t.Fatalf("line %q of %s: %v", line, path, err)
		}
		out = append(out, v)
		b = rest
	}
	return out
}

// waitCount waits until the loop has written n numbers.
func waitCount(t *testing.T, path string, n int) {
	t.Helper()
	deadline := time.Now().Add(progressTimeout)
	for len(readCount(t, path)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d numbers after %v, want %d: %v", path, len(readCount(t, path)), progressTimeout, n, readCount(t, path))
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
}
