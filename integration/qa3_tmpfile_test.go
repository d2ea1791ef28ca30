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

func TestQA3TmpfileRestore(t *testing.T) {
	t.Parallel()
	p := startTicking(t, start, "ok", 2, buildC(t, "qa3_tmpfile"), t.TempDir())
	rp := restoreFrom(t, p, dumpKill(t, p))
	requireProgress(t, rp, "ok")
	checkSequence(t, rp, "ok")
}

func TestQA3TmpfileLazy(t *testing.T) {
	t.Parallel()
	env := lazyEnv{}
	p := startTicking(t, env.startProg, "ok", 2, buildC(t, "qa3_tmpfile"), t.TempDir())
	m := migrateLazy(t, env, p, nil, nil)
	requireProgress(t, m.restored, "ok")
	checkSequence(t, m.restored, "ok")
}
