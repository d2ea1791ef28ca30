package integration

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// BenchmarkPushPath runs bench_pushpath (testdata/progs/bench_pushpath.c):
// the ways of moving a frozen process's pages over loopback TCP into
// UFFDIO_COPY (process_vm_readv or vmsplice+splice on the source, one or
// two target threads, 64 KiB or 1 MiB frames, one or two streams), each
// next to a plain TCP copy of the same bytes in the same iteration. It
// prints the medians over the iterations (-benchtime=3x for three):
//
//	go test -run '^$' -bench BenchmarkPushPath -benchtime=3x ./integration/
//
// 256 MiB per variant; LAZYCR_BENCH_PUSHPATH_MIB sets another size.
// Nothing of lazycr runs: it is the evidence for how lazycr pushes. The
// ratios move with the machine's load (it is shared); compare variants
// within one run. Seen here (2 vCPUs, 1 GiB, load 1.5-3.5): today's path
// (readvz→copy 64K) 0.48-0.60x plain TCP; 1 MiB frames 0.78-0.83x; two
// streams, each with its own installing thread, 0.66-0.93x; a second
// target thread (pipe) no better than one; vmsplice+splice on the source
// slower than process_vm_readv in every run once the target installs
// (splice→copy 1024K 0.47-0.60x against readvz→copy 0.67-0.83x).
func BenchmarkPushPath(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("userfaultfd of kernel-mode faults needs root (vm.unprivileged_userfaultfd)")
	}
	bin := buildCBench(b, "bench_pushpath")
	mib := "256"
	if v := os.Getenv("LAZYCR_BENCH_PUSHPATH_MIB"); v != "" {
		mib = v
	}
	gbs := map[string][]float64{}
	ratio := map[string][]float64{}
	var order []string
	for b.Loop() {
		out, err := exec.Command(bin, mib, "1").Output()
		if err != nil {
			b.Fatalf("bench_pushpath %s 1: %v", mib, err)
		}
		for l := range strings.Lines(string(out)) {
			name, g, r, err := parsePushPathLine(l)
			if err != nil {
				b.Fatal(err)
			}
			if _, ok := gbs[name]; !ok {
				order = append(order, name)
			}
			gbs[name] = append(gbs[name], g)
			ratio[name] = append(ratio[name], r)
		}
	}
	fmt.Printf("\npush paths over loopback, %s MiB, medians of %d runs (ratio: to plain TCP of the same run)\n", mib, b.N)
	for _, name := range order {
		fmt.Printf("%-36s %6.2f GB/s  %.2fx\n", name, median(gbs[name]), median(ratio[name]))
	}
}

// parsePushPathLine reads "NAME… G GB/s [R x tcp]" (the plain TCP line
// has no ratio: 1).
func parsePushPathLine(l string) (name string, gbs, ratio float64, err error) {
	f := strings.Fields(l)
	i := slices.Index(f, "GB/s")
	if i < 2 {
		return "", 0, 0, fmt.Errorf("bench_pushpath line %q: no GB/s figure", l)
	}
	if gbs, err = strconv.ParseFloat(f[i-1], 64); err != nil {
		return "", 0, 0, fmt.Errorf("bench_pushpath line %q: %w", l, err)
	}
	ratio = 1
	if i+1 < len(f) {
		if ratio, err = strconv.ParseFloat(strings.TrimSuffix(f[i+1], "x"), 64); err != nil {
			return "", 0, 0, fmt.Errorf("bench_pushpath line %q: %w", l, err)
		}
	}
	return strings.Join(f[:i-1], " "), gbs, ratio, nil
}
