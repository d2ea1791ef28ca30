package dump

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// BenchmarkReadVMAs is the VMA read of the freeze alone (readVMAs), on
// both paths, for a process (fill.c) with 64 MiB, 1 GiB and, with
// LAZYCR_BENCH_4G=1, 4 GiB populated in one mapping: "smaps" reads
// /proc/PID/smaps (every page table walked), "bpf" /proc/PID/maps and the
// task_vma iterator prepared by readBeforeFreeze (whose own cost is outside
// the freeze and not measured here). cpu-ms is this process's CPU time
// per read (the smaps walk is charged to the reader).
//
//	go test -count=1 -run '^$' -bench BenchmarkReadVMAs -benchtime=20x ./dump/
func BenchmarkReadVMAs(b *testing.B) {
	sizes := []int{64, 1024}
	if os.Getenv("LAZYCR_BENCH_4G") != "" {
		sizes = append(sizes, 4096)
	}
	for _, mib := range sizes {
		b.Run(fmt.Sprintf("%dMiB", mib), func(b *testing.B) {
			cmd := startFill(b, mib)
			pid := cmd.Process.Pid
			for _, path := range []string{VMAReadSmaps, VMAReadBPF} {
				b.Run(path, func(b *testing.B) {
					var pre *preFreeze
					if path == VMAReadBPF {
						pre = readBeforeFreeze(pid, zerolog.Nop())
						defer pre.close()
						if pre.prog == nil {
							b.Skipf("bpf path not available: %s", pre.why)
						}
					}
					b.ReportAllocs()
					var cpu time.Duration
					n := 0
					for b.Loop() {
						c0 := processCPU()
						r, err := readVMAs(pid, pid, pre)
						cpu += processCPU() - c0
						if err != nil {
							b.Fatal(err)
						}
						if r.how != path {
							b.Fatalf("read by %s, want %s: %s", r.how, path, r.why)
						}
						n++
					}
					b.ReportMetric(float64(cpu.Microseconds())/1000/float64(n), "cpu-ms/op")
				})
			}
		})
	}
}
