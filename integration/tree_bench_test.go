package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
	if os.Geteuid() != 0 {
		b.Skip("restore needs root (ptrace, clone3 set_tid, /proc/PID/mem)")
	}
	if lazycrErr != nil {
		b.Fatal(lazycrErr)
	}
	bin := buildCBench(b, "treefill")
	for _, n := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("procs=%d/mem=4MiB", n), func(b *testing.B) {
			dir, dumpTime := dumpTreeFill(b, bin, n, 4)
			sums := map[string]float64{}
			var wall time.Duration
			for b.Loop() {
				t0 := time.Now()
				pid, stats := restoreTreeStats(b, dir)
				wall += time.Since(t0)
				b.StopTimer()
				killAndWait(b, pid) // the namespace's init: the rest goes with it
				for k, v := range stats {
					sums[k] += v
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(dumpTime.Microseconds())/1000, "ms/dump")
			b.ReportMetric(float64(wall.Microseconds())/1000/float64(b.N), "ms/restore")
			for k, v := range sums {
				b.ReportMetric(v/float64(b.N), k)
			}
		})
	}
}

// dumpTreeFill starts treefill n mib as the init of a new PID namespace,
// waits for its report, dumps it (killing it) and returns the image
// directory and how long the dump ran.
func dumpTreeFill(b *testing.B, bin string, n, mib int) (string, time.Duration) {
	b.Helper()
	tmp := b.TempDir()
	out := filepath.Join(tmp, "stdout")
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(bin, strconv.Itoa(n), strconv.Itoa(mib))
	cmd.Stdout = f
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-done
	}()
	deadline := time.Now().Add(lazycrTimeout)
	for {
		data, err := os.ReadFile(out)
		if err != nil {
			b.Fatal(err)
		}
		if bytes.Contains(data, []byte("\n")) {
			break
		}
		select {
		case err := <-done:
			done <- err
			b.Fatalf("treefill exited (%v) before its report: %s", err, errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("treefill %d×%d MiB: no report within %v", n, mib, lazycrTimeout)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	dir := filepath.Join(tmp, "img")
	t0 := time.Now()
	o, e, code := runLazycr(b, "dump", "--pid", strconv.Itoa(cmd.Process.Pid), "-D", dir)
	took := time.Since(t0)
	if code != 0 {
		b.Fatalf("lazycr dump: exit %d\n%s%s", code, o, e)
	}
	return dir, took
}

// restoreTreeStats is restoreStats with --pidns instead of --new-pid.
func restoreTreeStats(b *testing.B, dir string) (int, map[string]float64) {
	b.Helper()
	return restoreStatsWith(b, dir, "--pidns")
}
