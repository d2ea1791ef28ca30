package pageserver

import (
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/lazycr/lazycr/uffd"
)

const benchSize = 256 << 20

var benchMem *fakeMemory

func benchMemory() *fakeMemory {
	if benchMem == nil {
		benchMem = &fakeMemory{base: testBase, data: make([]byte, benchSize)}
		for i := 0; i < benchSize; i += PageSize {
			benchMem.data[i] = byte(i >> 12)
		}
	}
	return benchMem
}

// BenchmarkPush moves 256 MiB of lazy pages by background push from a
// server to a client over loopback (client acks every frame).
func BenchmarkPush(b *testing.B) {
	mem := benchMemory()
	lazy := []uffd.Run{{Addr: testBase, Npages: benchSize / PageSize}}
	b.SetBytes(benchSize)
	b.ReportAllocs()
	for b.Loop() {
		_, l, wait := startServer(b, ServerConfig{Lazy: lazy, Memory: mem})
		c := dialClient(b, l.Addr().String(), ClientConfig{})
		if err := c.Resumed(); err != nil {
			b.Fatal(err)
		}
		for got := 0; got < benchSize; {
			pd := <-c.Pages()
			if pd.Err != nil {
				b.Fatal(pd.Err)
			}
			got += len(pd.Data) + pd.Zero*PageSize
			c.Ack(pd.Addr, len(pd.Data)/PageSize+pd.Zero)
			if pd.Release != nil {
				pd.Release()
			}
		}
		if err := c.Done(); err != nil {
			b.Fatal(err)
		}
		if r := wait(); r.err != nil {
			b.Fatal(r.err)
		}
		c.Close()
	}
}

// BenchmarkPlainTCP copies the same 256 MiB over a plain loopback TCP
// connection in 1 MiB writes: the ceiling for BenchmarkPush.
func BenchmarkPlainTCP(b *testing.B) {
	mem := benchMemory()
	b.SetBytes(benchSize)
	b.ReportAllocs()
	for b.Loop() {
		l := listen(b)
		done := make(chan error, 1)
		go func() {
			c, err := l.Accept()
			if err != nil {
				done <- err
				return
			}
			defer c.Close()
			for off := 0; off < benchSize; off += 1 << 20 {
				if _, err := c.Write(mem.data[off : off+1<<20]); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, 1<<20)
		if n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{c}, buf); err != nil || n != benchSize {
			b.Fatalf("copied %d bytes: %v", n, err)
		}
		c.Close()
		l.Close()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRequestRoundTrip measures one single-page request through the
// Client: Request, the server's read and PAGES frame, delivery on Pages.
func BenchmarkRequestRoundTrip(b *testing.B) {
	mem, lazy, files := testSetup()
	_, l, wait := startServer(b, ServerConfig{Files: files, Lazy: lazy, Memory: mem})
	c := dialClient(b, l.Addr().String(), ClientConfig{})
	if err := c.Resumed(); err != nil {
		b.Fatal(err)
	}
	want := lazyPages(lazy)
	for got := 0; got < len(want); { // let the push finish first
		pd := <-c.Pages()
		got += len(pd.Data)/PageSize + pd.Zero
		c.Ack(pd.Addr, len(pd.Data)/PageSize+pd.Zero)
		if pd.Release != nil {
			pd.Release()
		}
	}
	addrs := make([]uint64, 0, len(want))
	for a := range want {
		addrs = append(addrs, a)
	}
	slices.Sort(addrs)
	var lat []time.Duration
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		a := addrs[i%len(addrs)]
		i++
		start := time.Now()
		if err := c.Request(a, 1); err != nil {
			b.Fatal(err)
		}
		for pd := <-c.Replies(); pd.Addr != a; pd = <-c.Replies() {
			if pd.Err != nil {
				b.Fatal(pd.Err)
			}
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
	}
	if err := c.Done(); err != nil {
		b.Fatal(err)
	}
	if r := wait(); r.err != nil {
		b.Fatal(r.err)
	}
}
