package integration

import (
	"fmt"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkLazyTree measures the lazy migration of process trees of 1, 8
// and 64 processes with 16 MiB of populated memory each (testdata/progs/
// lazyfill, the init of its own PID namespace), over loopback: dump --lazy
// and restore --lazy-from --pidns, every member's memory served by the one
// page server. Each iteration starts a fresh tree outside the timer, and
// times the migration from the source's start until both lazycr exited.
// Metrics: ms/freeze-to-resume (the target's own figure: from the freeze
// on the source to the resume of the whole tree here), ms/all-in (from
// the resume until every lazy page of every member is in), ms/migration
// (the timed part), MiB/copied (lazily, per migration).
func BenchmarkLazyTree(b *testing.B) {
	benchPrereq(b, "lazy migration needs root (ptrace, userfaultfd, clone3 set_tid)")
	bin := buildCBench(b, "lazyfill")
	for _, n := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("procs=%d/mem=16MiB", n), func(b *testing.B) {
			var f2r, allIn, wall time.Duration
			var copied int64
			for b.Loop() {
				b.StopTimer()
				pid, done := startLazyFill(b, bin, n, 16)
				statsFile := statsPath(b, "target")
				b.StartTimer()
				t0 := time.Now()
				src := startLazySource(b, nil, pid, "127.0.0.1")
				dst := startLazyRun(b, "target lazycr restore --pidns", lazyCmd(b, nil, "restore", "--lazy-from", src.addr, "--pidns", "--stats-file", statsFile))
				rpid := lazyResumedPID(b, dst)
				resumed := time.Now()
				dst.requireExit(b, 0)
				allIn += time.Since(resumed)
				src.requireExit(b, 0)
				wall += time.Since(t0)
				b.StopTimer()
				l := readLazyStats(b, statsFile)
				f2r += time.Duration(l.FreezeToResumeMS * float64(time.Millisecond))
				copied += int64(l.PushPhaseBytes)
				killAndWait(b, rpid) // the namespace's init: the rest goes with it
				<-done
				b.StartTimer()
			}
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
			b.ReportMetric(ms(f2r), "ms/freeze-to-resume")
			b.ReportMetric(ms(allIn), "ms/all-in")
			b.ReportMetric(ms(wall), "ms/migration")
			b.ReportMetric(float64(copied)/(1<<20)/float64(b.N), "MiB/copied")
		})
	}
}

// startLazyFill starts lazyfill n mib as the init of a new PID namespace
// and waits for its report (every member filled its memory). The returned
// channel is closed once it has been reaped (a lazy migration's source
// kills it at the end).
func startLazyFill(b *testing.B, bin string, n, mib int) (int, <-chan struct{}) {
	b.Helper()
	cmd := exec.Command(bin, strconv.Itoa(n), strconv.Itoa(mib))
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID}
	return startUntil(b, cmd, "\n", fmt.Sprintf("lazyfill %d×%d MiB", n, mib))
}
