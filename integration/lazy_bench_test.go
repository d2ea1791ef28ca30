package integration

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// BenchmarkLazyMigration migrates lazy_verify (populated anonymous memory
// that keeps verifying itself) over loopback with dump --lazy / restore
// --lazy-from and reports, per size:
//
//	freeze-to-resume-ms  the target's "freeze to resume" (source freeze to
//	                     the process running on the target; the target
//	                     starts as soon as the source logs that it serves)
//	fault-p50-µs, fault-p99-µs  the handler's fault latency (target's
//	                     --stats-file)
//	lazy-GB/s            bytes the target copied in / (target start → exit)
//	tcp-GB/s             a plain io.Copy of as many bytes between two
//	                     loopback sockets, in the same run, for comparison
//	target-peak-RSS-MiB  the target lazycr's ru_maxrss
//
// 64 MiB and 1 GiB by default (under a minute with -benchtime=1x); 4 GiB
// too with LAZYCR_BENCH_4G=1.
func BenchmarkLazyMigration(b *testing.B) {
	benchPrereq(b, "migration needs root (ptrace, userfaultfd of another process, /proc/PID/mem)")
	bin := buildCBench(b, "lazy_verify")
	sizes := []int{64, 1024}
	if os.Getenv("LAZYCR_BENCH_4G") == "1" {
		sizes = append(sizes, 4096)
	}
	for _, mib := range sizes {
		b.Run(fmt.Sprintf("mem=%dMiB", mib), func(b *testing.B) {
			var sum struct {
				freeze, p50, p99, lazyGBs, tcpGBs, rss float64
			}
			for b.Loop() {
				b.StopTimer()
				pid := startLazyVerifyBench(b, bin, mib)
				statsFile := statsPath(b, "target")
				b.StartTimer()
				// The target is started first and waits for the source (it
				// retries a refused dial for --wait-source), as an operator
				// would run both: the freeze-to-resume time then excludes
				// starting lazycr.
				port := freePort(b)
				t0 := time.Now()
				dst := startLazyTarget(b, nil, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), "--wait-source", "2m", "--stats-file", statsFile)
				src := startLazySource(b, nil, pid, "127.0.0.1", "--port", strconv.Itoa(port))
				newPID := lazyResumedPID(b, dst)
				timeout := lazycrTimeout * time.Duration(1+mib/1024)
				if code := dst.wait(b, timeout); code != 0 {
					_, e := dst.output()
					b.Fatalf("target exit %d\n%s", code, e)
				}
				took := time.Since(t0)
				if code := src.wait(b, timeout); code != 0 {
					_, e := src.output()
					b.Fatalf("source exit %d\n%s", code, e)
				}
				b.StopTimer()
				l := readLazyStats(b, statsFile)
				killAndWait(b, newPID)
				sum.freeze += l.FreezeToResumeMS
				sum.p50 += l.FaultP50MS * 1000
				sum.p99 += l.FaultP99MS * 1000
				sum.lazyGBs += float64(l.PushPhaseBytes) / took.Seconds() / 1e9
				sum.tcpGBs += lazyLoopbackGBs(b, int64(l.PushPhaseBytes))
				sum.rss += float64(dst.maxRSSKiB()) / 1024
				b.StartTimer()
			}
			n := float64(b.N)
			b.ReportMetric(sum.freeze/n, "freeze-to-resume-ms")
			b.ReportMetric(sum.p50/n, "fault-p50-µs")
			b.ReportMetric(sum.p99/n, "fault-p99-µs")
			b.ReportMetric(sum.lazyGBs/n, "lazy-GB/s")
			b.ReportMetric(sum.tcpGBs/n, "tcp-GB/s")
			b.ReportMetric(sum.rss/n, "target-peak-RSS-MiB")
		})
	}
}

// startLazyVerifyBench starts lazy_verify with mib MiB and waits until it
// verified its memory once. The process is our child: it is reaped after
// the source kills it, or killed when b ends.
func startLazyVerifyBench(b *testing.B, bin string, mib int) int {
	b.Helper()
	pid, _ := startUntil(b, exec.Command(bin, strconv.Itoa(mib)), "\ntick verify 1\n", fmt.Sprintf("lazy_verify %d MiB", mib))
	return pid
}

// lazyLoopbackGBs copies n bytes from one loopback TCP socket to another
// with io.Copy and returns the rate in GB/s.
func lazyLoopbackGBs(b *testing.B, n int64) float64 {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		// Hide io.Discard's ReadFrom (small buffers): both sides copy 256 KiB at a time.
		m, _ := io.CopyBuffer(struct{ io.Writer }{io.Discard}, c, make([]byte, 256<<10))
		got <- m
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	if _, err := io.CopyBuffer(struct{ io.Writer }{c}, io.LimitReader(lazyZeroReader{}, n), make([]byte, 256<<10)); err != nil {
		b.Fatal(err)
	}
	c.Close()
	if m := <-got; m != n {
		b.Fatalf("loopback copy: %d of %d bytes arrived", m, n)
	}
	return float64(n) / time.Since(t0).Seconds() / 1e9
}

// lazyZeroReader reads zeros.
type lazyZeroReader struct{}

func (lazyZeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// freePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
