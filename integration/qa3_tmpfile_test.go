package integration

import (
	"testing"
)

// Unnamed temporary files (O_TMPFILE; glibc's tmpfile(3) and Python's
// TemporaryFile make theirs so): qa3_tmpfile checks their content, offset
// and missing name itself. Before, the dump succeeded and killed the
// process and the restore failed ("open fd 3 on deleted file DIR/#INODE:
// injected openat: not a directory": the recorded O_TMPFILE flags, which
// include O_DIRECTORY, were used to reopen it).

func startTmpfile(t *testing.T, startProg func(*testing.T, string, ...string) *proc) *proc {
	t.Helper()
	p := startProg(t, buildC(t, "qa3_tmpfile"), t.TempDir())
	var r struct {
		Pid int `json:"pid"`
	}
	waitReport(t, p, &r)
	waitTick(t, p, "ok", 2)
	return p
}

func TestQA3TmpfileRestore(t *testing.T) {
	t.Parallel()
	p := startTmpfile(t, start)
	rp := restoreFrom(t, p, dumpKill(t, p))
	requireProgress(t, rp, "ok")
	checkSequence(t, rp, "ok")
}

func TestQA3TmpfileLazy(t *testing.T) {
	t.Parallel()
	env := lazyEnv{}
	p := startTmpfile(t, env.startProg)
	m := migrateLazy(t, env, p, nil, nil)
	requireProgress(t, m.restored, "ok")
	checkSequence(t, m.restored, "ok")
}
