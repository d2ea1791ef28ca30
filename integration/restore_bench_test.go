package integration

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkRestore measures `lazycr restore` of one image per case: ms per
// restore (the whole lazycr run, stub start included) and the per-phase
// durations lazycr reports with --stats-file. Each case dumps testdata/progs/fill
// once; every iteration restores it with --new-pid and kills the result
// (outside the timer). Runs within a minute with -benchtime=1x.
func BenchmarkRestore(b *testing.B) {
	benchPrereq(b, "restore needs root (ptrace, clone3 set_tid, /proc/PID/mem)")
	bin := buildCBench(b, "fill")
	for _, c := range []struct{ mib, vmas int }{{64, 10}, {1024, 10}, {64, 1000}} {
		b.Run(fmt.Sprintf("mem=%dMiB/vmas=%d", c.mib, c.vmas), func(b *testing.B) {
			dir := dumpFill(b, bin, c.mib, c.vmas)
			benchRestores(b, dir, "--new-pid")
		})
	}
}

// buildCBench is buildC for a benchmark.
func buildCBench(b *testing.B, name string) string {
	b.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		b.Skip("gcc not found: the C test programs cannot be built (CI installs gcc)")
	}
	out := filepath.Join(b.TempDir(), name)
	src, err := filepath.Abs(filepath.Join("testdata", "progs", name+".c"))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	if o, err := exec.CommandContext(ctx, gcc, "-O1", "-Wall", "-Wextra", "-Werror", "-o", out, src).CombinedOutput(); err != nil {
		b.Fatalf("gcc %s: %v\n%s", name, err, o)
	}
	return out
}

// dumpFill starts fill, waits for its report, dumps it (killing it) and
// returns the image directory.
func dumpFill(b *testing.B, bin string, mib, vmas int) string {
	b.Helper()
	dir, _ := dumpBenchProg(b, exec.Command(bin, strconv.Itoa(mib), strconv.Itoa(vmas)), fmt.Sprintf("fill %d MiB %d VMAs", mib, vmas))
	return dir
}

// restoreStatsWith restores dir with flag (--new-pid, --pidns) and
// --stats-file and returns the pid and the per-phase stats as benchmark
// metrics: durations in "<phase>-ms", sizes in "<name>" (e.g.
// "eager-bytes"), named as the lines of `lazycr restore --stats`.
func restoreStatsWith(b *testing.B, dir, flag string) (int, map[string]float64) {
	b.Helper()
	path := statsPath(b, "restore")
	out, errOut, code := runLazycr(b, "restore", "-D", dir, flag, "--stats-file", path)
	if code != 0 {
		b.Fatalf("lazycr restore: exit %d\n%s", code, errOut)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		b.Fatalf("lazycr restore: stdout %q is not a pid", out)
	}
	f := readStatsFile(b, path)
	r := f.Restore
	if r == nil || f.PID != pid {
		b.Fatalf("%s: restore section %v, pid %d; want a restore section and pid %d", path, r, f.PID, pid)
	}
	return pid, map[string]float64{
		"load-images-ms": r.LoadMS, "stub-start-ms": r.StubStartMS, "address-space-ms": r.AddressSpaceMS,
		"pages-ms": r.PagesMS, "fds-ms": r.FdsMS, "process-state-ms": r.StateMS, "threads-ms": r.ThreadsMS,
		"credentials-ms": r.CredsMS, "resume-ms": r.ResumeMS, "total-ms": r.TotalMS, "eager-bytes": float64(r.EagerBytes),
	}
}

// killAndWait kills pid, which is not our child, and waits until it is gone.
func killAndWait(b *testing.B, pid int) {
	b.Helper()
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		b.Fatalf("pidfd_open restored pid %d: %v", pid, err)
	}
	defer unix.Close(pidfd)
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		b.Fatalf("kill restored pid %d: %v", pid, err)
	}
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int(goneTimeout.Milliseconds()))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n == 0 {
			b.Fatalf("restored pid %d does not end after SIGKILL: %v", pid, err)
		}
		return
	}
}
