package integration

import (
	"testing"
)

// The scheduling attributes `taskset`, `chrt` and `ionice` give a program
// (CPU affinity, policy, I/O priority; also the timer slack), which its
// threads inherit: qa3_sched checks them in every thread. Before, the
// restored process silently had lazycr's (QA3 R7).

func startSched(t *testing.T, startProg func(*testing.T, string, ...string) *proc) *proc {
	t.Helper()
	p := startProg(t, buildC(t, "qa3_sched"))
	var r struct {
		Pid int `json:"pid"`
		CPU int `json:"cpu"`
	}
	waitReport(t, p, &r)
	waitTick(t, p, "t2", 2)
	return p
}

func TestQA3SchedRestore(t *testing.T) {
	t.Parallel()
	p := startSched(t, start)
	rp := restoreFrom(t, p, dumpKill(t, p))
	requireProgress(t, rp, "ok", "t0", "t1", "t2")
	checkSequence(t, rp, "ok", "t0", "t1", "t2")
}

func TestQA3SchedLazy(t *testing.T) {
	t.Parallel()
	env := lazyEnv{}
	p := startSched(t, env.startProg)
	m := migrateLazy(t, env, p, nil, nil)
	requireProgress(t, m.restored, "ok", "t0", "t1", "t2")
	checkSequence(t, m.restored, "ok", "t0", "t1", "t2")
}
