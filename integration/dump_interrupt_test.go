package integration

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lazycr/lazycr/image"
)

// TestDumpInterruptedWhileWriting (F6): Ctrl-C (SIGINT) while a plain dump
// writes the pages of the frozen process fails the dump: exit 1 saying it
// was interrupted, no image directory left, and the process released
// untouched, running on (it was killed after a complete dump before).
func TestDumpInterruptedWhileWriting(t *testing.T) {
	t.Parallel()
	needRoot(t)
	if lazycrErr != nil {
		t.Fatal(lazycrErr)
	}
	p := start(t, buildC(t, "fill"), "512", "1") // 512 MiB of non-zero pages: writing them takes a while
	var r struct {
		Pid   int    `json:"pid"`
		VMAs  int    `json:"vmas"`
		Bytes uint64 `json:"bytes"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "main")

	// Interrupt once page data is being written.
	d := startDumpWriting(t, p.pid)
	cmd, exited, stdout, stderr, dir := d.cmd, d.exited, &d.stdout, &d.stderr, d.dir
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-exited:
	case <-time.After(lazycrTimeout):
		t.Fatalf("lazycr dump still running %v after SIGINT", lazycrTimeout)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("interrupted dump: %v, want exit 1\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stderr.String(), "interrupted") {
		t.Errorf("stderr does not say interrupted:\n%s", stderr.String())
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("image directory %s left behind (%v)", dir, err)
	}
	requireRunning(t, p.pid)
	requireProgress(t, p, "main")
}

// runningDump is a `lazycr dump` started by startDumpWriting.
type runningDump struct {
	cmd            *exec.Cmd
	dir            string     // the image directory
	exited         chan error // gets cmd.Wait's result
	stdout, stderr bytes.Buffer
}

// startDumpWriting starts `lazycr dump --pid pid -D DIR extra...` and
// returns once it is writing page data (the pages file grows past its
// header): after the injected syscalls that read the frozen process's
// state, before its release. The dump is killed when t ends.
func startDumpWriting(t *testing.T, pid int, extra ...string) *runningDump {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "img")
	d := &runningDump{dir: dir, exited: make(chan error, 1)}
	d.cmd = exec.Command(lazycrPath, append([]string{"dump", "--pid", strconv.Itoa(pid), "-D", dir}, extra...)...)
	d.cmd.Stdout, d.cmd.Stderr = &d.stdout, &d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.exited <- d.cmd.Wait() }()
	t.Cleanup(func() { _ = d.cmd.Process.Kill() })
	pages := filepath.Join(dir, image.PagesFile(uint32(pid)))
	deadline := time.Now().Add(lazycrTimeout)
	for {
		if st, err := os.Stat(pages); err == nil && st.Size() > image.HeaderSize {
			return d
		}
		select {
		case err := <-d.exited:
			t.Fatalf("dump ended (%v) before its pages were seen being written; stderr:\n%s", err, d.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no page data written to %s within %v", pages, lazycrTimeout)
		}
		time.Sleep(time.Millisecond) // polling interval, not synchronisation
	}
}
