package uffd

import (
	"runtime"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkHandlerFault measures fault → installed through the whole
// handler with a local source that answers at once: a locked thread faults
// on a missing lazy page inside getrandom(2) and times the call.
func BenchmarkHandlerFault(b *testing.B) {
	const pages = 4096
	work := make(chan []byte)
	took := make(chan time.Duration)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for p := range work {
			t0 := time.Now()
			unix.Getrandom(p[:1], 0)
			took <- time.Since(t0)
		}
	}()
	defer close(work)
	inline := func(s *fakeSource) { s.inline = true }
	x := start(b, pages, all(pages), HandlerConfig{}, false, inline)
	var lat []time.Duration
	page := 0
	b.ReportAllocs()
	for b.Loop() {
		if page == pages {
			b.StopTimer()
			x.h.Close()
			x = start(b, pages, all(pages), HandlerConfig{}, false, inline)
			page = 0
			b.StartTimer()
		}
		work <- x.page(page)
		page++
		lat = append(lat, <-took)
	}
	b.StopTimer()
	if len(lat) > 0 {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
	}
}

// BenchmarkHandlerPush measures installing pushed 1 MiB batches (copied
// with UFFDIO_COPY_MODE_DONTWAKE: nobody waits on them).
func BenchmarkHandlerPush(b *testing.B) {
	const pages, batch = 16384, 256
	ackc := func(s *fakeSource) { s.ackc = make(chan uint64, pages) }
	x := start(b, pages, all(pages), HandlerConfig{}, false, ackc)
	page := 0
	b.SetBytes(batch * int64(PageSize))
	for b.Loop() {
		if page == pages {
			b.StopTimer()
			x.h.Close()
			x = start(b, pages, all(pages), HandlerConfig{}, false, ackc)
			page = 0
			b.StartTimer()
		}
		x.src.push(x.addr+uint64(page)*PageSize, batch)
		page += batch
		for n := uint64(0); n < batch; {
			select {
			case k := <-x.src.ackc:
				n += k
			case <-time.After(hang):
				b.Fatal("batch not installed")
			}
		}
	}
}
