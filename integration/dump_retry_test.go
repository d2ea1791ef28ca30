package integration

import "testing"

// TestDumpRetriesPassingState: a process frozen while its inotify instance
// holds an unread event cannot be dumped exactly (the event cannot be queued
// again), but that state passes: dump releases it, lets it run a moment and
// freezes again, so the dump succeeds and the restored instance works.
// Without the retry the first freeze, which lands while the event is still
// queued, refuses.
func TestDumpRetriesPassingState(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "inotify_pending"), t.TempDir())
	var r struct {
		Pid int `json:"pid"`
	}
	waitReport(t, p, &r)
	rp := restoreFrom(t, p, dumpKill(t, p))
	requireProgress(t, rp, "quiet")
}
