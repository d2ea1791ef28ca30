package integration

import (
	"testing"
)

// A process holding files of its own /proc directory open (/proc/self/status,
// the /proc/self directory): the restored process gets its own. Before,
// the dump succeeded and killed it, and the restore failed ("fd 3: file
// changed since the dump: /proc/PID/status is now inode ...": the new
// process has new /proc inodes, and another pid after --new-pid).

func startProcself(t *testing.T, startProg func(*testing.T, string, ...string) *proc) *proc {
	t.Helper()
	p := startProg(t, buildC(t, "qa3_procself"))
	var r struct {
		Pid int `json:"pid"`
	}
	waitReport(t, p, &r)
	waitTick(t, p, "ok", 2)
	return p
}

func TestQA3ProcSelfRestore(t *testing.T) {
	t.Parallel()
	p := startProcself(t, start)
	rp := restoreFrom(t, p, dumpKill(t, p))
	requireProgress(t, rp, "ok")
	checkSequence(t, rp, "ok")
}

// TestQA3ProcSelfLazy migrates it on one host with --new-pid: the fds
// describe the new pid.
func TestQA3ProcSelfLazy(t *testing.T) {
	t.Parallel()
	env := lazyEnv{}
	p := startProcself(t, env.startProg)
	m := migrateLazy(t, env, p, nil, nil)
	requireProgress(t, m.restored, "ok")
	checkSequence(t, m.restored, "ok")
}
