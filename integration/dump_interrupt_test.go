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

	dir := filepath.Join(t.TempDir(), "img")
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(lazycrPath, "dump", "--pid", strconv.Itoa(p.pid), "-D", dir)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	// Interrupt once page data is being written (the pages file grows
	// past its header).
	pages := filepath.Join(dir, image.PagesFile(uint32(p.pid)))
	deadline := time.Now().Add(lazycrTimeout)
	for {
		if st, err := os.Stat(pages); err == nil && st.Size() > image.HeaderSize {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("dump ended (%v) before its pages were seen being written; stderr:\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no page data written to %s within %v", pages, lazycrTimeout)
		}
		time.Sleep(time.Millisecond) // polling interval, not synchronisation
	}
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
