package integration

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	lzproc "github.com/lazycr/lazycr/proc"
)

// VMA flags read without smaps in the freeze (package vmaflags,
// dump/vmaread.go): the image must hold exactly what smaps shows.

// TestVMAFlagsBPF dumps vmacheck in every state of vmaCases (protection,
// file mappings, every madvise flag vmattr restores, mlock, mlock2
// on-fault, mlockall future, prctl) and checks that the dump read the VMA
// flags by the BPF path (stats vma_read "bpf") and recorded for every VMA
// exactly the VmFlags smaps shows once the process runs again; then the
// same dump forced onto the smaps path (failpoint vmaflags.bpf, as when
// the iterator is not available) says "smaps" and records the same.
func TestVMAFlagsBPF(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "vmacheck", "-lrt")
	for d := filepath.Dir(bin); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	fp := failpointLazycr(t)
	for _, c := range vmaCases {
		t.Run(c.name(), func(t *testing.T) {
			p := startVmacheck(t, bin, c, start)
			statsFile := statsPath(t, "dump")
			img := dumpLeaveRunning(t, p.pid, "--stats-file", statsFile)
			d := readStatsFile(t, statsFile).Dump
			if d.VMARead != "bpf" {
				t.Errorf("dump read the vma flags by %q, want \"bpf\"", d.VMARead)
			}
			if d.VMAReadMS <= 0 || d.VMAPrepareMS <= 0 {
				t.Errorf("stats vma_read_ms %v, vma_prepare_ms %v: want both timed", d.VMAReadMS, d.VMAPrepareMS)
			}
			requireSmapsFlags(t, p.pid, img)

			dir := filepath.Join(t.TempDir(), "smaps")
			smapsStats := statsPath(t, "dump-smaps")
			if _, e, code := runFailpoint(t, fp, "vmaflags.bpf", "", "dump", "--pid", strconv.Itoa(p.pid), "-D", dir,
				"--leave-running", "--stats-file", smapsStats); code != 0 {
				t.Fatalf("dump with failpoint vmaflags.bpf: exit %d\n%s", code, e)
			}
			if got := readStatsFile(t, smapsStats).Dump.VMARead; got != "smaps" {
				t.Errorf("dump with failpoint vmaflags.bpf read the vma flags by %q, want \"smaps\"", got)
			}
			requireSmapsFlags(t, p.pid, show(t, dir))
			requireProgress(t, p, "ok")
		})
	}
}

// requireSmapsFlags checks that img holds pid's VMAs as its smaps lists
// them now, each with smaps' VmFlags.
func requireSmapsFlags(t *testing.T, pid int, img *imageSet) {
	t.Helper()
	sm, err := lzproc.ReadSmaps(pid)
	if err != nil {
		t.Fatal(err)
	}
	mm := img.Memory[uint32(pid)]
	if mm == nil {
		t.Fatalf("image has no memory map of pid %d", pid)
	}
	type span struct{ s, e uint64 }
	in := map[span][]string{}
	for _, v := range mm.Vmas {
		in[span{v.Start, v.End}] = v.VmFlags
	}
	for _, m := range sm {
		f, ok := in[span{m.Start, m.End}]
		if !ok {
			t.Errorf("vma %#x-%#x %s of smaps not in the image", m.Start, m.End, m.Path)
			continue
		}
		if !slices.Equal(f, m.VmFlags) {
			t.Errorf("vma %#x-%#x %s: image VmFlags %q, smaps %q", m.Start, m.End, m.Path, f, m.VmFlags)
		}
	}
	if len(mm.Vmas) != len(sm) {
		t.Errorf("image has %d vmas, smaps %d", len(mm.Vmas), len(sm))
	}
}

// TestVMAFlagsBPFTree: a dump of a process tree (treecheck: a root, two
// children, a grandchild) reads every member's VMA flags by the BPF path
// and records each member's VMAs with smaps' VmFlags.
func TestVMAFlagsBPFTree(t *testing.T) {
	t.Parallel()
	p, r := startTreecheck(t)
	requireProgress(t, p, "root:ok", "c1:ok", "c2:ok", "g:ok")
	statsFile := statsPath(t, "dump")
	img := dumpLeaveRunning(t, r.Pid, "--stats-file", statsFile)
	if got := readStatsFile(t, statsFile).Dump.VMARead; got != "bpf" {
		t.Errorf("dump read the vma flags by %q, want \"bpf\"", got)
	}
	for _, pid := range []int{r.Pid, r.C1, r.C2, r.G} {
		requireSmapsFlags(t, pid, img)
	}
}
