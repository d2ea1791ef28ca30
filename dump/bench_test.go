package dump

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// startFill compiles testdata/fill.c and starts it with mib MiB populated,
// returning once it says ready.
func startFill(tb testing.TB, mib int) *exec.Cmd {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("dumping a process needs root (ptrace, pidfd_getfd)")
	}
	if _, err := exec.LookPath("gcc"); err != nil {
		tb.Skip("gcc not found: the test program is built from C at test time")
	}
	bin := filepath.Join(tb.TempDir(), "fill")
	if out, err := exec.Command("gcc", "-O1", "-o", bin, "testdata/fill.c").CombinedOutput(); err != nil {
		tb.Fatalf("build fill.c: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, fmt.Sprint(mib))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		tb.Fatalf("fill did not get ready: %q %v", line, err)
	}
	return cmd
}

// BenchmarkDump reports freeze time, the time the process stays frozen and
// the total dump time for 64 MiB and 1 GiB of populated memory, full dumps
// (every page written) against lazy ones (skeleton only).
func BenchmarkDump(b *testing.B) {
	for _, mib := range []int{64, 1024} {
		for _, mode := range []Mode{ModeLeaveRunning, ModeLazy} {
			name := fmt.Sprintf("%dMiB/%s", mib, map[Mode]string{ModeLeaveRunning: "full", ModeLazy: "lazy"}[mode])
			b.Run(name, func(b *testing.B) {
				cmd := startFill(b, mib)
				b.ReportAllocs()
				var freeze, total time.Duration
				var written uint64
				n := 0
				for b.Loop() {
					dir := filepath.Join(b.TempDir(), "img")
					start := time.Now()
					cp, err := Freeze(context.Background(), Options{PID: cmd.Process.Pid, Dir: dir, Mode: mode, Log: zerolog.Nop()})
					if err != nil {
						b.Fatal(err)
					}
					if err := cp.WriteImages(dir); err != nil {
						cp.Release()
						b.Fatal(err)
					}
					if err := cp.Release(); err != nil {
						b.Fatal(err)
					}
					total += time.Since(start)
					freeze += cp.Stats.Freeze
					written = cp.Stats.BytesWritten
					n++
					os.RemoveAll(dir)
				}
				b.ReportMetric(float64(freeze.Microseconds())/float64(n), "freeze-µs")
				b.ReportMetric(float64(total.Milliseconds())/float64(n), "dump-ms")
				b.ReportMetric(float64(written)/(1<<20), "written-MiB")
			})
		}
	}
}
