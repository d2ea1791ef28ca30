package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// TestFilesPtyMasterRefused: a pseudo-terminal master is refused, naming
// the fd (reopening /dev/ptmx would silently give the process a new pty),
// and the process keeps running.
func TestFilesPtyMasterRefused(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "ptmx"))
	var r struct {
		Pid  int `json:"pid"`
		Ptmx int `json:"ptmx"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "main")
	dir := filepath.Join(t.TempDir(), "img")
	_, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(p.pid), "-D", dir, "--leave-running")
	if code != 1 {
		t.Errorf("dump of a process with a pty master: exit %d, want 1; stderr:\n%s", code, errOut)
	}
	if !regexp.MustCompile(`pseudo-terminal master`).MatchString(errOut) || !regexp.MustCompile(`\bfd `+strconv.Itoa(r.Ptmx)+`\b`).MatchString(errOut) {
		t.Errorf("stderr does not name pty master fd %d:\n%s", r.Ptmx, errOut)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the failed dump left %s behind (stat: %v)", dir, err)
	}
	requireProgress(t, p, "main")
}
