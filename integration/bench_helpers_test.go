package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/lazycr/lazycr/stats"
)

// benchPrereq skips b when not root (why names what needs root) and fails
// it when lazycr did not build.
func benchPrereq(b *testing.B, why string) {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip(why)
	}
	if lazycrErr != nil {
		b.Fatal(lazycrErr)
	}
}

// startUntil starts cmd with its stdout in a file and waits until that
// holds ready (polled, with lazycrTimeout as the deadline). It fails tb
// if what (the program, as messages name it) exits first. The process is
// killed and reaped when tb ends; the channel is closed once it is reaped.
func startUntil(tb testing.TB, cmd *exec.Cmd, ready, what string) (int, <-chan struct{}) {
	tb.Helper()
	out := filepath.Join(tb.TempDir(), "stdout")
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	cmd.Stdout = f
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	tb.Cleanup(func() { cmd.Process.Kill(); <-done })
	deadline := time.Now().Add(benchReadyTimeout)
	for {
		data, err := os.ReadFile(out)
		if err != nil {
			tb.Fatal(err)
		}
		if bytes.Contains(data, []byte(ready)) {
			return cmd.Process.Pid, done
		}
		select {
		case <-done:
			tb.Fatalf("%s exited before printing %q: %s", what, ready, errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: %q not printed within %v", what, ready, benchReadyTimeout)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
}

// dumpBenchProg starts cmd, waits for its report (a first line), dumps it
// (killing it) and returns the image directory and how long the dump ran.
func dumpBenchProg(b *testing.B, cmd *exec.Cmd, what string) (string, time.Duration) {
	b.Helper()
	pid, _ := startUntil(b, cmd, "\n", what)
	dir := filepath.Join(b.TempDir(), "img")
	t0 := time.Now()
	o, e, code := runLazycr(b, "dump", "--pid", strconv.Itoa(pid), "-D", dir)
	took := time.Since(t0)
	if code != 0 {
		b.Fatalf("lazycr dump: exit %d\n%s%s", code, o, e)
	}
	return dir, took
}

// benchRestores restores dir with flag (--new-pid, --pidns) once per
// iteration, kills the result outside the timer and reports ms/restore
// (the whole lazycr run) and the per-phase --stats, averaged.
func benchRestores(b *testing.B, dir, flag string) {
	b.Helper()
	sums := map[string]float64{}
	var wall time.Duration
	for b.Loop() {
		t0 := time.Now()
		pid, stats := restoreStatsWith(b, dir, flag)
		wall += time.Since(t0)
		b.StopTimer()
		killAndWait(b, pid) // with --pidns the namespace's init: the rest goes with it
		for k, v := range stats {
			sums[k] += v
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(wall.Microseconds())/1000/float64(b.N), "ms/restore")
	for k, v := range sums {
		b.ReportMetric(v/float64(b.N), k)
	}
}

// statsPath is a fresh path for lazycr's --stats-file in tb's temporary
// directory.
func statsPath(tb testing.TB, name string) string {
	tb.Helper()
	return filepath.Join(tb.TempDir(), name+".json")
}

// readStatsFile decodes the --stats-file lazycr wrote at path (schema:
// package stats) and fails tb if it is missing or records an error.
func readStatsFile(tb testing.TB, path string) *stats.File {
	tb.Helper()
	f, err := stats.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	if f.Error != "" {
		tb.Fatalf("%s: lazycr %s recorded an error: %s", path, f.Command, f.Error)
	}
	return f
}

// readLazyStats is readStatsFile for a lazy target, whose lazy section
// must be there.
func readLazyStats(tb testing.TB, path string) *stats.Lazy {
	tb.Helper()
	f := readStatsFile(tb, path)
	if f.Lazy == nil {
		tb.Fatalf("%s: no lazy section (command %s)", path, f.Command)
	}
	return f.Lazy
}

// benchReadyTimeout bounds how long a benchmark's program may take to fill
// its memory and say it is ready: CI runs every benchmark once, in
// parallel with other packages', and filling 1 GiB took over a minute at
// a load of 30-40 (BenchmarkRestore, BenchmarkTreeRestore). It measures
// nothing.
const benchReadyTimeout = 5 * time.Minute
