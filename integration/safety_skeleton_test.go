package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRestoreLazySkeletonRefused: `dump --lazy -D dir` keeps the skeleton of
// a post-copy dump in dir; its lazy pages are not there. `restore -D dir`
// used to accept it, print "restored and resumed" and exit 0, and the
// program then read zeros where its data was. It must refuse, naming the
// VMAs whose page data is missing and pointing at restore --lazy-from.
func TestRestoreLazySkeletonRefused(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "memcheck"))
	var r memcheckReport
	waitReport(t, p, &r)
	requireProgress(t, p, "check")

	dir := filepath.Join(t.TempDir(), "skeleton")
	src := startLazySource(t, nil, p.pid, "127.0.0.1", "-D", dir)
	// --new-pid: the original is still frozen under its pid; without the
	// refusal the restore would go through.
	out, errOut, code := runLazycr(t, "restore", "-D", dir, "--new-pid")
	requireExit1(t, "restore -D of a lazy skeleton", errOut, code,
		"lazy skeleton", `dump --lazy`, `restore --lazy-from`,
		`vma 0x[0-9a-f]+-0x[0-9a-f]+ \(\[heap\]\): [0-9]+ pages in runs 0x[0-9a-f]+\+[0-9]+`,
		`[0-9]+ pages in [0-9]+ VMAs are missing`)
	if out != "" {
		t.Errorf("restore printed %q on stdout: it resumed a process", out)
	}

	// The source still serves; interrupted before any target resumed, it
	// releases the original, which carries on verifying its memory.
	if err := src.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	src.requireExit(t, 1)
	if _, e := src.output(); !strings.Contains(e, "released") {
		t.Errorf("source stderr does not say the process was released:\n%s", e)
	}
	requireProgress(t, p, "check")
	checkSequence(t, p, "check")
}
