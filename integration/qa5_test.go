package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// TestQA5SemUndoRefused: a process holding a System V semaphore taken with
// SEM_UNDO (a SysV mutex) is refused, naming the set: the kill would
// release it (the kernel applies the undo list at exit and offers no way
// to read it), and the restored process would run on believing it holds a
// free mutex. The process keeps running, still holding it.
func TestQA5SemUndoRefused(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "qa5_semundo")
	p := start(t, bin)
	var r struct {
		Pid   int `json:"pid"`
		Semid int `json:"semid"`
	}
	waitReport(t, p, &r)
	t.Cleanup(func() { _ = exec.Command(bin, "-r", strconv.Itoa(r.Semid)).Run() })
	requireProgress(t, p, "held")
	dir := filepath.Join(t.TempDir(), "img")
	_, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(p.pid), "-D", dir)
	if code != 1 {
		t.Errorf("dump of a process holding a SEM_UNDO semaphore: exit %d, want 1; stderr:\n%s", code, errOut)
	}
	if !regexp.MustCompile(`System V semaphore 0 of set ` + strconv.Itoa(r.Semid) + `\b.*SEM_UNDO`).MatchString(errOut) {
		t.Errorf("stderr does not name semaphore set %d and SEM_UNDO:\n%s", r.Semid, errOut)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the failed dump left %s behind (stat: %v)", dir, err)
	}
	requireProgress(t, p, "held")
}
