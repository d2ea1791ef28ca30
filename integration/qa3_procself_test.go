package integration

import (
	"testing"
)

// A process holding files of its own /proc directory open (/proc/self/status,
// the /proc/self directory): the restored process gets its own. Before,
// the dump succeeded and killed it, and the restore failed ("fd 3: file
// changed since the dump: /proc/PID/status is now inode ...": the new
// process has new /proc inodes, and another pid after --new-pid).

func TestQA3ProcSelfRestore(t *testing.T) {
	t.Parallel()
	p := startTicking(t, start, "ok", 2, buildC(t, "qa3_procself"))
	rp := restoreFrom(t, p, dumpKill(t, p))
	requireProgress(t, rp, "ok")
	checkSequence(t, rp, "ok")
}

// TestQA3ProcSelfLazy migrates it on one host with --new-pid: the fds
// describe the new pid.
func TestQA3ProcSelfLazy(t *testing.T) {
	t.Parallel()
	env := lazyEnv{}
	p := startTicking(t, env.startProg, "ok", 2, buildC(t, "qa3_procself"))
	m := migrateLazy(t, env, p, nil, nil)
	requireProgress(t, m.restored, "ok")
	checkSequence(t, m.restored, "ok")
}
