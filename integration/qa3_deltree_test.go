package integration

import (
	"testing"
)

// A current directory and open files in a tree removed with `rm -r` (the
// directory and its parents): qa3_deltree keeps checking them itself.
// Before, the dump succeeded and killed the process, and the restore failed
// ("current directory DIR/t/a/b was removed; make it again: ... no such
// file or directory"): only the innermost directory was made again.

func TestQA3RemovedTreeRestore(t *testing.T) {
	t.Parallel()
	p := startTicking(t, start, "ok", 2, buildC(t, "qa3_deltree"), t.TempDir())
	was := readRoot(t, p.pid)
	rp := restoreFrom(t, p, dumpKill(t, p))
	requireProgress(t, rp, "ok")
	checkSequence(t, rp, "ok")
	requireSameRoot(t, rp.pid, was)
}

func TestQA3RemovedTreeLazy(t *testing.T) {
	t.Parallel()
	env := lazyEnv{}
	p := startTicking(t, env.startProg, "ok", 2, buildC(t, "qa3_deltree"), t.TempDir())
	was := readRoot(t, p.pid)
	m := migrateLazy(t, env, p, nil, nil)
	requireProgress(t, m.restored, "ok")
	checkSequence(t, m.restored, "ok")
	requireSameRoot(t, m.restored.pid, was)
}
