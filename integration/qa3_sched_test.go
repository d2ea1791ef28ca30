package integration

import (
	"testing"
)

// The scheduling attributes `taskset`, `chrt` and `ionice` give a program
// (CPU affinity, policy, I/O priority; also the timer slack), which its
// threads inherit: qa3_sched checks them in every thread. Before, the
// restored process silently had lazycr's (QA3 R7).

func TestQA3SchedRestore(t *testing.T) {
	t.Parallel()
	p := startTicking(t, start, "t2", 2, buildC(t, "qa3_sched"))
	rp := restoreFrom(t, p, dumpKill(t, p))
	requireProgress(t, rp, "ok", "t0", "t1", "t2")
	checkSequence(t, rp, "ok", "t0", "t1", "t2")
}

func TestQA3SchedLazy(t *testing.T) {
	t.Parallel()
	env := lazyEnv{}
	p := startTicking(t, env.startProg, "t2", 2, buildC(t, "qa3_sched"))
	m := migrateLazy(t, env, p, nil, nil)
	requireProgress(t, m.restored, "ok", "t0", "t1", "t2")
	checkSequence(t, m.restored, "ok", "t0", "t1", "t2")
}
