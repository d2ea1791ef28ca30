package uffd

import (
	"runtime"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkFaultCopy measures one fault round trip in-process: a locked
// toucher thread faults on a missing page inside getrandom(2), the
// benchmark goroutine waits on the uffd, reads the message, UFFDIO_COPYs a
// page and the toucher resumes. p50-µs/p99-µs are the fault durations seen
// by the faulting thread.
func BenchmarkFaultCopy(b *testing.B) {
	needRoot(b)
	const pages = 512
	addr, mem := region(b, pages)
	f := openAPI(b, FeatureThreadID)
	if _, err := f.Register(addr, pages*pageSize, ModeMissing); err != nil {
		b.Fatal(err)
	}
	work := make(chan int)
	took := make(chan time.Duration)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for off := range work {
			t0 := time.Now()
			unix.Getrandom(mem[off:off+1], 0) // faults in the kernel, in a syscall
			took <- time.Since(t0)
		}
	}()
	defer close(work)
	src := make([]byte, pageSize)
	var buf [4]Msg
	var lat []time.Duration
	page := 0
	b.ReportAllocs()
	for b.Loop() {
		if page == pages {
			b.StopTimer()
			if err := unix.Madvise(mem, unix.MADV_DONTNEED); err != nil {
				b.Fatal(err)
			}
			page = 0
			b.StartTimer()
		}
		work <- page * int(pageSize)
		page++
		served := false
		for !served {
			if _, err := f.Wait(hang); err != nil {
				b.Fatal(err)
			}
			msgs, err := f.ReadMsgs(buf[:])
			if err != nil {
				b.Fatal(err)
			}
			for _, m := range msgs {
				if m.Event != EventPageFault {
					continue
				}
				if _, err := f.Copy(m.PageFault.Addr&^(pageSize-1), src, 0); err != nil {
					b.Fatal(err)
				}
				served = true
			}
		}
		lat = append(lat, <-took)
	}
	b.StopTimer()
	if len(lat) > 0 {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
	}
}
