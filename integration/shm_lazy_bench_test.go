package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/lazycr/lazycr/pageserver"
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
// private memory. Each size runs twice: "shared", and "private" (the same
// bytes in the child's private memory, which is served lazily: what lazy
// shared memory could approach). Sizes 16 and 128 MiB; 1 GiB with
// LAZYCR_BENCH_SHM_GIB=1 (shared runs there only if the skeleton may
// carry it, see pageserver.MaxImagesSize; since the pages files are
// streamed it may).
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
		for _, mode := range []string{"shared", "private"} {
			b.Run(fmt.Sprintf("mem=%dMiB/%s", mib, mode), func(b *testing.B) {
				if mode == "shared" && mib<<20 >= pageserver.MaxImagesSize {
					// The source refuses after the freeze ("image files
					// exceed ..."), releasing the process.
					b.Skipf("%d MiB of shared memory travels in the skeleton, whose image files may not exceed pageserver.MaxImagesSize (%d MiB)", mib, pageserver.MaxImagesSize>>20)
				}
				var f2r, allIn, wall, pagesMS, dumpMS, fetchMS, restoreMS time.Duration
				var lazy, eager int64
				for b.Loop() {
					b.StopTimer()
					cmd := exec.Command(bin, strconv.Itoa(mib), mode)
					cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID}
					pid, done := startUntil(b, cmd, "\n", fmt.Sprintf("shmfill %d MiB %s", mib, mode))
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
}

// shmUffdReport is testdata/progs/shmuffd's report (see its comment).
type shmUffdReport struct {
	MiB                     int  `json:"mib"`
	CopyVisibleUnregistered bool `json:"copy_visible_unregistered"`
	UnregisteredFillsZero   bool `json:"unregistered_fills_zero"`
	OtherCopyWakes          bool `json:"other_copy_wakes"`
	WakeReleases            bool `json:"wake_releases"`
	RegisteredRefault       bool `json:"registered_refault"`
	MinorOnCached           bool `json:"minor_on_cached"`
	RemoveAmbiguous         bool `json:"remove_ambiguous"`

	CopyAnon4K     float64 `json:"copy_anon_4k"`
	CopyAnon64K    float64 `json:"copy_anon_64k"`
	CopyShm4K      float64 `json:"copy_shm_4k"`
	CopyShm64K     float64 `json:"copy_shm_64k"`
	PwriteShm64K   float64 `json:"pwrite_shm_64k"`
	ContinueShm64K float64 `json:"continue_shm_64k"`
	MemcpyShm      float64 `json:"memcpy_shm"`

	FaultAnon4K     [2]float64 `json:"fault_anon_4k"`
	FaultShm4K      [2]float64 `json:"fault_shm_4k"`
	FaultAnon64K    [2]float64 `json:"fault_anon_64k"`
	FaultShm64K     [2]float64 `json:"fault_shm_64k"`
	FaultShmMinor4K [2]float64 `json:"fault_shm_minor_4k"`
}

// BenchmarkShmUffd runs testdata/progs/shmuffd, the microbenchmark of the
// alternative to BenchmarkLazyShm's eager shared memory: shmem served by
// userfaultfd, MISSING mode (UFFDIO_COPY) or MINOR mode (pwrite into the
// shmem file, then UFFDIO_CONTINUE). It fails if this kernel does not
// behave as the choice in dump/memory.go relies on: a UFFDIO_COPY through
// one process's uffd lands in the shmem page cache (every mapping sees it,
// no second fault), a mapping left unregistered silently fills a missing
// page with zeros (so every mapping would have to be registered), and a
// fault blocked on one uffd is not woken by a copy through another, and
// UFFD_EVENT_REMOVE does not tell MADV_DONTNEED (shmem keeps the data)
// from MADV_REMOVE (the data is gone).
// Metrics: GB/s of UFFDIO_COPY into anonymous and shmem memory in 4 and 64
// KiB calls, of pwrite and UFFDIO_CONTINUE, of memcpy into fresh shared
// memory; µs p50/p99 of a fault answered from another process. 128 MiB;
// 1 GiB too with LAZYCR_BENCH_SHM_GIB=1.
func BenchmarkShmUffd(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("userfaultfd of kernel faults needs CAP_SYS_PTRACE (vm.unprivileged_userfaultfd is 0)")
	}
	bin := buildCBench(b, "shmuffd")
	sizes := []int{128}
	if os.Getenv(shmLazyGiBEnv) != "" {
		sizes = append(sizes, 1024)
	}
	for _, mib := range sizes {
		b.Run(fmt.Sprintf("mem=%dMiB", mib), func(b *testing.B) {
			var sum shmUffdReport
			for b.Loop() {
				ctx, cancel := context.WithTimeout(context.Background(), lazycrTimeout)
				out, err := exec.CommandContext(ctx, bin, strconv.Itoa(mib)).Output()
				cancel()
				if err != nil {
					var stderr []byte
					if ee, ok := err.(*exec.ExitError); ok {
						stderr = ee.Stderr
					}
					b.Fatalf("shmuffd %d: %v\n%s", mib, err, stderr)
				}
				var r shmUffdReport
				if err := json.Unmarshal(out, &r); err != nil {
					b.Fatalf("shmuffd %d: report %q: %v", mib, out, err)
				}
				for _, c := range []struct {
					what      string
					got, want bool
				}{
					{"a page copied through one uffd reads back through an unregistered mapping", r.CopyVisibleUnregistered, true},
					{"an unregistered mapping fills a missing page with zeros (a later copy: EEXIST)", r.UnregisteredFillsZero, true},
					{"a copy through another uffd wakes a fault blocked on this one", r.OtherCopyWakes, false},
					{"UFFDIO_WAKE releases that fault", r.WakeReleases, true},
					{"a registered mapping faults again on a page another uffd installed", r.RegisteredRefault, false},
					{"MISSING|MINOR: a cached page faults MINOR, a missing one MISSING", r.MinorOnCached, true},
					{"MADV_DONTNEED (data kept) and MADV_REMOVE (data gone) send the same REMOVE event", r.RemoveAmbiguous, true},
				} {
					if c.got != c.want {
						b.Errorf("shmuffd: %s: %v, want %v", c.what, c.got, c.want)
					}
				}
				add := func(dst *float64, v float64) { *dst += v }
				add(&sum.CopyAnon4K, r.CopyAnon4K)
				add(&sum.CopyAnon64K, r.CopyAnon64K)
				add(&sum.CopyShm4K, r.CopyShm4K)
				add(&sum.CopyShm64K, r.CopyShm64K)
				add(&sum.PwriteShm64K, r.PwriteShm64K)
				add(&sum.ContinueShm64K, r.ContinueShm64K)
				add(&sum.MemcpyShm, r.MemcpyShm)
				for i := range 2 {
					add(&sum.FaultAnon4K[i], r.FaultAnon4K[i])
					add(&sum.FaultShm4K[i], r.FaultShm4K[i])
					add(&sum.FaultAnon64K[i], r.FaultAnon64K[i])
					add(&sum.FaultShm64K[i], r.FaultShm64K[i])
					add(&sum.FaultShmMinor4K[i], r.FaultShmMinor4K[i])
				}
			}
			n := float64(b.N)
			for _, m := range []struct {
				v    float64
				unit string
			}{
				{sum.CopyAnon4K, "GB/s-copy-anon-4k"}, {sum.CopyAnon64K, "GB/s-copy-anon-64k"},
				{sum.CopyShm4K, "GB/s-copy-shm-4k"}, {sum.CopyShm64K, "GB/s-copy-shm-64k"},
				{sum.PwriteShm64K, "GB/s-pwrite-shm-64k"}, {sum.ContinueShm64K, "GB/s-continue-shm-64k"},
				{sum.MemcpyShm, "GB/s-memcpy-shm"},
				{sum.FaultAnon4K[0], "µs-p50-fault-anon-4k"}, {sum.FaultAnon4K[1], "µs-p99-fault-anon-4k"},
				{sum.FaultShm4K[0], "µs-p50-fault-shm-4k"}, {sum.FaultShm4K[1], "µs-p99-fault-shm-4k"},
				{sum.FaultAnon64K[0], "µs-p50-fault-anon-64k"}, {sum.FaultAnon64K[1], "µs-p99-fault-anon-64k"},
				{sum.FaultShm64K[0], "µs-p50-fault-shm-64k"}, {sum.FaultShm64K[1], "µs-p99-fault-shm-64k"},
				{sum.FaultShmMinor4K[0], "µs-p50-fault-shm-minor-4k"}, {sum.FaultShmMinor4K[1], "µs-p99-fault-shm-minor-4k"},
			} {
				b.ReportMetric(m.v/n, m.unit)
			}
		})
	}
}
