package integration

import (
	"testing"
)

// TestQA3SleepRemaining: a relative sleep with a rem pointer, interrupted
// by a plain dump, sleeps what was left of it after the restore (the kernel
// wrote the remaining time to rem as the dump interrupted it), not its
// whole length again; qa3_sleeprem judges that itself against the gap it
// saw. Before, both sleeps started again whole (QA3 R2).
func TestQA3SleepRemaining(t *testing.T) {
	t.Parallel()
	p := startTicking(t, start, "up", 75, buildC(t, "qa3_sleeprem"), "4") // 1.5 s of the 4 s slept
	rp := restoreFrom(t, p, dumpKill(t, p))
	waitTick(t, rp, "nanosleep", 1)
	waitTick(t, rp, "clock_nanosleep", 1)
	requireProgress(t, rp, "up")
}
