package integration

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/lazycr/lazycr/stats"
)

// --stats-file: what a real dump, restore and lazy migration write,
// decoded with the schema (stats.Decode refuses unknown fields), checked
// against what must be there and against the human summary printed by the
// same run.

// readStats decodes the stats file at path, which must be private (0600).
func readStats(t *testing.T, path string) *stats.File {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stats file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v, want 0600", path, fi.Mode().Perm())
	}
	f, err := stats.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	t.Logf("%s:\n%s", filepath.Base(path), raw)
	if f.Start.IsZero() || f.TotalMS <= 0 {
		t.Errorf("%s: start %v, total_ms %v: want both set", path, f.Start, f.TotalMS)
	}
	return f
}

// positive fails t for each named value that is not > 0.
func positive(t *testing.T, what string, vals map[string]float64) {
	t.Helper()
	for k, v := range vals {
		if !(v > 0) {
			t.Errorf("%s: %s = %v, want > 0", what, k, v)
		}
	}
}

func TestStatsFilePlain(t *testing.T) {
	t.Parallel()
	const mib = 16
	p := start(t, buildC(t, "lazy_verify"), strconv.Itoa(mib))
	var r lazyVerifyReport
	waitReport(t, p, &r)
	lazyWaitTick(t, p, "verify", 1)
	tmp := t.TempDir()
	dumpFile, restoreFile := filepath.Join(tmp, "dump.json"), filepath.Join(tmp, "restore.json")
	dir := dumpKill(t, p, "--stats-file", dumpFile)
	q := restoreFrom(t, p, dir, "--stats-file", restoreFile)
	lazyRequireRounds(t, q, "verify", 2)
	checkSequence(t, q, "verify")

	d := readStats(t, dumpFile)
	if d.Command != "dump" || d.PID != p.pid || d.Error != "" || d.Dump == nil || d.Serve != nil || d.Restore != nil || d.Lazy != nil {
		t.Fatalf("dump stats: %+v, want command dump, pid %d, no error, only a dump section", d, p.pid)
	}
	ds := d.Dump
	positive(t, "dump", map[string]float64{
		"threads": float64(ds.Threads), "vmas": float64(ds.VMAs), "pages_populated": float64(ds.PagesPopulated),
		"pages_eager": float64(ds.PagesEager), "freeze_ms": ds.FreezeMS, "frozen_ms": ds.FrozenMS, "total_ms": ds.TotalMS,
	})
	if ds.BytesWritten < mib<<20 || ds.PagesEager < mib*256 {
		t.Errorf("dump wrote %d bytes, %d eager pages: want at least the %d MiB the process filled", ds.BytesWritten, ds.PagesEager, mib)
	}
	if ds.FreezeMS > ds.FrozenMS || ds.FrozenMS > d.TotalMS {
		t.Errorf("dump: freeze_ms %v ≤ frozen_ms %v ≤ total_ms %v does not hold", ds.FreezeMS, ds.FrozenMS, d.TotalMS)
	}

	rs := readStats(t, restoreFile)
	if rs.Command != "restore" || rs.PID != q.pid || rs.Error != "" || rs.Restore == nil || rs.Lazy != nil || rs.Dump != nil {
		t.Fatalf("restore stats: %+v, want command restore, pid %d, no error, only a restore section", rs, q.pid)
	}
	rr := rs.Restore
	positive(t, "restore", map[string]float64{
		"threads": float64(rr.Threads), "load_ms": rr.LoadMS, "stub_start_ms": rr.StubStartMS,
		"address_space_ms": rr.AddressSpaceMS, "pages_ms": rr.PagesMS, "state_ms": rr.StateMS, "fds_ms": rr.FdsMS,
		"resume_ms": rr.ResumeMS, "total_ms": rr.TotalMS,
	})
	if rr.EagerBytes < mib<<20 {
		t.Errorf("restore wrote %d eager bytes, want at least %d MiB", rr.EagerBytes, mib)
	}
	if rr.Threads != ds.Threads {
		t.Errorf("restored %d threads, dumped %d", rr.Threads, ds.Threads)
	}
}

func TestStatsFileLazy(t *testing.T) {
	t.Parallel()
	const mib = 64
	p := start(t, buildC(t, "lazy_verify"), strconv.Itoa(mib))
	var r lazyVerifyReport
	waitReport(t, p, &r)
	lazyWaitTick(t, p, "verify", 1)
	tmp := t.TempDir()
	srcFile, dstFile := filepath.Join(tmp, "source.json"), filepath.Join(tmp, "target.json")
	m := migrateLazy(t, lazyEnv{}, p, []string{"--stats-file", srcFile}, []string{"--stats-file", dstFile})
	lazyRequireRounds(t, m.restored, "verify", 2)
	checkSequence(t, m.restored, "verify")

	s := readStats(t, srcFile)
	if s.Command != "dump --lazy" || s.PID != p.pid || s.Error != "" || s.Dump == nil || s.Serve == nil || s.Restore != nil {
		t.Fatalf("source stats: %+v, want command \"dump --lazy\", pid %d, no error, dump and serve sections", s, p.pid)
	}
	sv := s.Serve
	positive(t, "source", map[string]float64{
		"dump.threads": float64(s.Dump.Threads), "dump.pages_lazy": float64(s.Dump.PagesLazy), "dump.freeze_ms": s.Dump.FreezeMS,
		"dump.total_ms": s.Dump.TotalMS, "dump.frozen_ms": s.Dump.FrozenMS,
		"freeze_to_resume_ms": sv.FreezeToResumeMS, "push_phase_ms": sv.PushPhaseMS, "push_phase_bytes": float64(sv.PushPhaseBytes),
		"push_phase_gb_per_s": sv.PushPhaseGBPerS, "push_pages": float64(sv.PushPages), "acked_pages": float64(sv.AckedPages),
		"serving_ms": sv.ServingMS,
	})
	if !sv.Done {
		t.Errorf("source: done = false after a migration that ended with DONE")
	}
	if sv.PushPhaseBytes != sv.RequestBytes+sv.PushBytes || sv.PushPhaseMS >= s.TotalMS || sv.FreezeToResumeMS >= s.TotalMS {
		t.Errorf("source: push phase %v bytes in %v ms, freeze→resume %v ms, total %v ms: inconsistent", sv.PushPhaseBytes, sv.PushPhaseMS, sv.FreezeToResumeMS, s.TotalMS)
	}
	// One clock, one order: freeze, RESUMED, DONE, the original killed.
	if s.Dump.FrozenMS < sv.FreezeToResumeMS+sv.PushPhaseMS {
		t.Errorf("source: frozen %v ms < freeze→resume %v + push phase %v ms", s.Dump.FrozenMS, sv.FreezeToResumeMS, sv.PushPhaseMS)
	}
	if sv.AckedPages != s.Dump.PagesLazy {
		t.Errorf("source: target acknowledged %d pages of %d lazy ones", sv.AckedPages, s.Dump.PagesLazy)
	}

	d := readStats(t, dstFile)
	if d.Command != "restore --lazy-from" || d.PID != m.restored.pid || d.Error != "" || d.Restore == nil || d.Lazy == nil || d.Dump != nil {
		t.Fatalf("target stats: %+v, want command \"restore --lazy-from\", pid %d, no error, restore and lazy sections", d, m.restored.pid)
	}
	l := d.Lazy
	positive(t, "target", map[string]float64{
		"restore.total_ms": d.Restore.TotalMS, "restore.uffd_ms": d.Restore.UffdMS, "restore.threads": float64(d.Restore.Threads),
		"freeze_to_resume_ms": l.FreezeToResumeMS, "fetch_ms": l.FetchMS, "push_phase_ms": l.PushPhaseMS,
		"push_phase_bytes": float64(l.PushPhaseBytes), "push_phase_gb_per_s": l.PushPhaseGBPerS,
		"pages_push": float64(l.PagesPush), "faults": float64(l.Faults), "fault_p50_ms": l.FaultP50MS, "fault_max_ms": l.FaultMaxMS,
	})
	if l.PushPhaseBytes < mib<<20 {
		t.Errorf("target: push phase installed %d bytes, want at least the %d MiB populated", l.PushPhaseBytes, mib)
	}
	if got := (l.PagesFault + l.PagesFaultAround + l.PagesPush - l.PagesSourceZero) * 4096; got != l.PushPhaseBytes {
		t.Errorf("target: pages by fault %d + fault-around %d + push %d - zero at the source %d = %d bytes, push_phase_bytes %d",
			l.PagesFault, l.PagesFaultAround, l.PagesPush, l.PagesSourceZero, got, l.PushPhaseBytes)
	}
	if l.PagesSourceZero > sv.ZeroPages { // fewer if some arrived twice (a push racing a fault)
		t.Errorf("target installed %d pages the source sent as zero, the source sent only %d", l.PagesSourceZero, sv.ZeroPages)
	}
	if l.Lost != 0 || l.Poisoned != 0 {
		t.Errorf("target: lost %d, poisoned %d pages in a clean migration", l.Lost, l.Poisoned)
	}
	var byPath uint64
	for _, n := range l.FaultsBy {
		byPath += n
	}
	if byPath != l.Faults {
		t.Errorf("target: faults_by %v sums to %d, faults %d", l.FaultsBy, byPath, l.Faults)
	}
	if !(l.FaultP50MS <= l.FaultP90MS && l.FaultP90MS <= l.FaultP99MS && l.FaultP99MS <= l.FaultMaxMS) {
		t.Errorf("target: fault p50 %v p90 %v p99 %v max %v ms are not ordered", l.FaultP50MS, l.FaultP90MS, l.FaultP99MS, l.FaultMaxMS)
	}
	// One set of samples, nearest rank: with fewer than 100 the p99 is the
	// max (QA2 Q9: two faults gave p99 0.84 ms, max 5.40 ms).
	if n := l.Faults - l.FaultsBy["aborted"]; n > 0 && n < 100 && l.FaultP99MS != l.FaultMaxMS {
		t.Errorf("target: %d fault latencies, p99 %v ms, want the max %v ms", n, l.FaultP99MS, l.FaultMaxMS)
	}
	t.Logf("target: faults %d %v, p50 %.3f p99 %.3f max %.3f ms, duplicates %d", l.Faults, l.FaultsBy, l.FaultP50MS, l.FaultP99MS, l.FaultMaxMS, l.Duplicates)
	// The file says what the human summary of the same run says.
	_, e := m.target.output()
	sum := parseLazySummary(t, e)
	if uint64(sum.bytesCopied) != l.PushPhaseBytes {
		t.Errorf("target: summary says %d bytes copied, stats file %d", sum.bytesCopied, l.PushPhaseBytes)
	}
	if want := stats.MS(sum.p50); want != l.FaultP50MS {
		t.Errorf("target: summary says fault p50 %v, stats file %v ms", sum.p50, l.FaultP50MS)
	}
	if l.PushPhaseMS >= d.TotalMS || l.FetchMS >= d.TotalMS {
		t.Errorf("target: push phase %v ms, fetch %v ms, not within the command's %v ms", l.PushPhaseMS, l.FetchMS, d.TotalMS)
	}
}

// TestStatsFileFailure: a failed command writes the file too, with the
// error and without the sections it did not reach.
func TestStatsFileFailure(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	// Nobody listens: the target gives up after --wait-source.
	dst := filepath.Join(tmp, "target.json")
	from := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	_, e, code := runLazycr(t, "restore", "--lazy-from", from, "--wait-source", "200ms", "--stats-file", dst)
	if code != 1 {
		t.Fatalf("restore --lazy-from %s with nobody there: exit %d, want 1\n%s", from, code, e)
	}
	f := readStats(t, dst)
	if f.Command != "restore --lazy-from" || f.Error == "" || f.Restore != nil || f.Lazy != nil || f.PID != 0 {
		t.Errorf("failed lazy restore: %+v, want command \"restore --lazy-from\", an error, pid 0 and no sections", f)
	}
	// A process that is gone by the time dump looks.
	p := start(t, buildC(t, "lazy_verify"), "1")
	var r lazyVerifyReport
	waitReport(t, p, &r)
	p.cmd.Process.Kill()
	<-p.done
	waitGone(t, p.pid)
	src := filepath.Join(tmp, "dump.json")
	_, e, code = runLazycr(t, "dump", "--pid", strconv.Itoa(p.pid), "-D", filepath.Join(tmp, "img"), "--stats-file", src)
	if code != 1 {
		t.Fatalf("dump of a gone pid %d: exit %d, want 1\n%s", p.pid, code, e)
	}
	f = readStats(t, src)
	if f.Command != "dump" || f.PID != p.pid || f.Error == "" || f.Dump != nil {
		t.Errorf("failed dump: %+v, want command dump, pid %d, an error and no dump section", f, p.pid)
	}
	if time.Since(f.Start) > lazycrTimeout {
		t.Errorf("failed dump: start %v is not this run's", f.Start)
	}
}

// TestStatsFileDemo: `lazycr demo --stats-file` holds both sides of the
// migration (read from the two lazycr runs' own files) and the client's
// counters.
func TestStatsFileDemo(t *testing.T) {
	work := t.TempDir()
	path := filepath.Join(work, "demo.json")
	o, e, code := runLazycr(t, "demo", "--udpp", "go", "--before", "3", "--after", "5", "--interval", "50ms",
		"--work-dir", filepath.Join(work, "demo"), "--stats-file", path)
	if code != 0 {
		t.Fatalf("lazycr demo: exit %d\n%s\n%s", code, o, e)
	}
	f := readStats(t, path)
	if f.Command != "demo" || f.Error != "" || f.Dump == nil || f.Serve == nil || f.Restore == nil || f.Lazy == nil || f.Demo == nil {
		t.Fatalf("demo stats: %+v, want command demo, no error, every section", f)
	}
	positive(t, "demo", map[string]float64{
		"pid": float64(f.PID), "serve.freeze_to_resume_ms": f.Serve.FreezeToResumeMS, "lazy.freeze_to_resume_ms": f.Lazy.FreezeToResumeMS,
		"lazy.push_phase_ms": f.Lazy.PushPhaseMS, "restore.total_ms": f.Restore.TotalMS,
		"demo.freeze_to_first_pong_ms": f.Demo.FreezeToFirstPongMS, "demo.sent": float64(f.Demo.Sent),
		"demo.received": float64(f.Demo.Received), "demo.server_pings": float64(f.Demo.ServerPings),
	})
	if f.Serve.FrozenAt.IsZero() {
		t.Errorf("demo stats: serve.frozen_at missing")
	}
	if d := f.Demo; d.Received+d.Lost != d.Sent || d.Duplicated != 0 || d.Reordered != 0 {
		t.Errorf("demo stats: client counters %+v", d)
	}
	// The first pong on C comes after the resume there.
	if f.Demo.FreezeToFirstPongMS < f.Lazy.FreezeToResumeMS {
		t.Errorf("demo stats: first pong %v ms after the freeze, before the resume at %v ms", f.Demo.FreezeToFirstPongMS, f.Lazy.FreezeToResumeMS)
	}
}

// TestStatsFileDetach: with --detach the background half writes the file
// when the migration is done (the foreground returned long before).
func TestStatsFileDetach(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "lazy_verify"), "16")
	var r lazyVerifyReport
	waitReport(t, p, &r)
	lazyWaitTick(t, p, "verify", 1)
	progress(t, p)
	tmp := t.TempDir()
	path := filepath.Join(tmp, "target.json")
	src := startLazySource(t, nil, p.pid, "127.0.0.1")
	dst := startLazyTarget(t, nil, src.addr, "--detach", "--log-file", filepath.Join(tmp, "handler.log"), "--stats-file", path)
	pid := lazyResumedPID(t, dst)
	dst.requireExit(t, 0)
	rp := adopt(t, pid)
	rp.continueOutput(p, true)
	src.requireExit(t, 0)
	requireLazySourceGone(t, p)
	deadline := time.Now().Add(lazycrTimeout)
	for {
		if _, err := os.Stat(path); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(tmp, "handler.log"))
			t.Fatalf("the background handler wrote no %s within %v; its log:\n%s", path, lazycrTimeout, b)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	f := readStats(t, path)
	if f.Command != "restore --lazy-from" || f.Error != "" || f.PID != pid || f.Lazy == nil || f.Lazy.PushPhaseBytes < 16<<20 {
		t.Errorf("detached target stats: %+v, want pid %d, no error, a lazy section with the 16 MiB", f, pid)
	}
}
