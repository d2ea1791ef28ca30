package integration

import (
	"fmt"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkTreeRestore measures plain `lazycr restore --pidns` of process
// trees of 1, 8 and 64 processes with 4 MiB of populated memory each (the
// root is the init of its own PID namespace, so every iteration restores
// the same pids into a fresh namespace). Each case dumps testdata/progs/
// treefill once; every iteration restores it and kills the result outside
// the timer. Metrics: ms per restore (the whole lazycr run) and the
// per-phase durations of --stats, summed over the members.
func BenchmarkTreeRestore(b *testing.B) {
	benchPrereq(b, "restore needs root (ptrace, clone3 set_tid, /proc/PID/mem)")
	bin := buildCBench(b, "treefill")
	for _, n := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("procs=%d/mem=4MiB", n), func(b *testing.B) {
			dir, dumpTime := dumpTreeFill(b, bin, n, 4)
			benchRestores(b, dir, "--pidns")
			b.ReportMetric(float64(dumpTime.Microseconds())/1000, "ms/dump") // after b.Loop, which drops earlier metrics
		})
	}
}

// dumpTreeFill starts treefill n mib as the init of a new PID namespace,
// waits for its report, dumps it (killing it) and returns the image
// directory and how long the dump ran.
func dumpTreeFill(b *testing.B, bin string, n, mib int) (string, time.Duration) {
	b.Helper()
	cmd := exec.Command(bin, strconv.Itoa(n), strconv.Itoa(mib))
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID}
	return dumpBenchProg(b, cmd, fmt.Sprintf("treefill %d×%d MiB", n, mib))
}
