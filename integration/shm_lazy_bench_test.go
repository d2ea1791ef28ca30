package integration

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// shmLazyGiBEnv opts BenchmarkLazyShm into its 1 GiB case (any non-empty
// value): it moves 1 GiB per iteration and holds 2 GiB of memory at peak.
const shmLazyGiBEnv = "LAZYCR_BENCH_SHM_GIB"

// BenchmarkLazyShm measures what shared memory costs a lazy migration
// today: testdata/progs/shmfill (a parent and a child, the init of its own
// PID namespace, the child having written every page of MIB MiB of
// MAP_SHARED|MAP_ANONYMOUS memory mapped by both) is migrated over
// loopback with dump --lazy and restore --lazy-from --pidns. Shared memory
// travels in the skeleton (dump/memory.go pageState), so it is written
// into the target before the resume: ms/freeze-to-resume grows with it,
// while the lazy part (ms/all-in, MiB/lazy) is only the two processes'
// private memory. Sizes 16 and 128 MiB; 1 GiB with LAZYCR_BENCH_SHM_GIB=1.
// Metrics as BenchmarkLazyTree's, plus MiB/eager (the target's
// restore.eager_bytes) and ms/pages (restore.pages_ms: writing them).
// BenchmarkShmUffd measures the alternative, serving shmem by userfaultfd.
func BenchmarkLazyShm(b *testing.B) {
	benchPrereq(b, "lazy migration needs root (ptrace, userfaultfd, clone3 set_tid)")
	bin := buildCBench(b, "shmfill")
	sizes := []int{16, 128}
	if os.Getenv(shmLazyGiBEnv) != "" {
		sizes = append(sizes, 1024)
	}
	for _, mib := range sizes {
		b.Run(fmt.Sprintf("shm=%dMiB", mib), func(b *testing.B) {
			var f2r, allIn, wall, pagesMS, dumpMS, fetchMS, restoreMS time.Duration
			var lazy, eager int64
			for b.Loop() {
				b.StopTimer()
				cmd := exec.Command(bin, strconv.Itoa(mib))
				cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID}
				pid, done := startUntil(b, cmd, "\n", fmt.Sprintf("shmfill %d MiB", mib))
				statsFile, srcStats := statsPath(b, "target"), statsPath(b, "source")
				b.StartTimer()
				t0 := time.Now()
				src := startLazySource(b, nil, pid, "127.0.0.1", "--stats-file", srcStats)
				dst := startLazyRun(b, "target lazycr restore --pidns", lazyCmd(b, nil, "restore", "--lazy-from", src.addr, "--pidns", "--stats-file", statsFile))
				rpid := lazyResumedPID(b, dst)
				resumed := time.Now()
				dst.requireExit(b, 0)
				allIn += time.Since(resumed)
				src.requireExit(b, 0)
				wall += time.Since(t0)
				b.StopTimer()
				f := readStatsFile(b, statsFile)
				if f.Lazy == nil || f.Restore == nil {
					b.Fatalf("%s: no lazy or restore section", statsFile)
				}
				s := readStatsFile(b, srcStats)
				if s.Dump == nil {
					b.Fatalf("%s: no dump section", srcStats)
				}
				msDur := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
				f2r += msDur(f.Lazy.FreezeToResumeMS)
				lazy += int64(f.Lazy.PushPhaseBytes)
				eager += int64(f.Restore.EagerBytes)
				pagesMS += msDur(f.Restore.PagesMS)
				fetchMS += msDur(f.Lazy.FetchMS)
				restoreMS += msDur(f.Restore.TotalMS)
				dumpMS += msDur(s.Dump.TotalMS)
				killAndWait(b, rpid) // the namespace's init: the child goes with it
				<-done
				b.StartTimer()
			}
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
			mibOf := func(n int64) float64 { return float64(n) / (1 << 20) / float64(b.N) }
			b.ReportMetric(ms(f2r), "ms/freeze-to-resume")
			b.ReportMetric(ms(allIn), "ms/all-in")
			b.ReportMetric(ms(wall), "ms/migration")
			b.ReportMetric(ms(dumpMS), "ms/dump")
			b.ReportMetric(ms(fetchMS), "ms/fetch")
			b.ReportMetric(ms(restoreMS), "ms/restore")
			b.ReportMetric(ms(pagesMS), "ms/pages")
			b.ReportMetric(mibOf(eager), "MiB/eager")
			b.ReportMetric(mibOf(lazy), "MiB/lazy")
		})
	}
}
