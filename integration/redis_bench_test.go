package integration

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lazycr/lazycr/hosts"
)

// BenchmarkRedisClientGap: redis-server on host B, with DEBUG POPULATE'd
// data, migrates lazily to host C (--net-policy takeover: its service
// address moves with it) while a client on host A does SET/GET pairs on
// one connection (newRedisLazy, as TestTCPLazyRedis). It reports the gap
// the client sees (the longest time between two answered pairs, and the
// p99 of those times) next to freeze → resume of the same run (the
// target's --stats-file), and where the freeze's gap went:
//
//	go test -run '^$' -bench BenchmarkRedisClientGap -benchtime=3x ./integration/
//
// mem=64MiB by default; mem=1GiB (3 000 000 keys, the issue's) too with
// LAZYCR_BENCH_REDIS_1G=1. Each figure is the median of the iterations.
// Metrics:
//
//	gap-max-ms         the longest time between two answered pairs (the
//	                   freeze's, or a stall of the push phase after it)
//	gap-p99-ms         the 99th percentile of those times
//	freeze-gap-ms      the gap the resume fell in: last answer before the
//	                   freeze → first answer after the resume
//	freeze-resume-ms   the source's freeze → the resume on C (target stats)
//	before-freeze-ms   the client's last answer before the freeze → the freeze
//	resume-answer-ms   the resume on C → the client's first answer after it
//	push-phase-ms      the target's push phase (RESUMED_OK → last page in)
//	client-retrans     segments the client retransmitted during the run
//	errors, reconnects the client's (both must be 0: the benchmark fails)
//
// so freeze-gap = before-freeze + freeze-resume + resume-answer (medians
// of each, not exactly additive). Each iteration logs the timeline of
// both lazycr logs around the freeze's gap. Nothing here is a threshold; the load
// average at the start is logged, the machine may be shared.
func BenchmarkRedisClientGap(b *testing.B) {
	benchPrereq(b, "migration needs root (ptrace, userfaultfd, network namespaces)")
	sizes := []struct {
		name string
		keys int
	}{{"mem=64MiB", 3000000 / 16}}
	if os.Getenv("LAZYCR_BENCH_REDIS_1G") == "1" {
		sizes = append(sizes, struct {
			name string
			keys int
		}{"mem=1GiB", 3000000})
	}
	for _, sz := range sizes {
		b.Run(sz.name, func(b *testing.B) {
			var runs []redisGapSample
			for b.Loop() { // ns/op: set-up, populate, one migration
				runs = append(runs, redisGapOnce(b, sz.keys))
			}
			med := func(get func(redisGapSample) float64) float64 {
				var v []float64
				for _, r := range runs {
					v = append(v, get(r))
				}
				return median(v)
			}
			b.ReportMetric(med(func(s redisGapSample) float64 { return s.gapMax }), "gap-max-ms")
			b.ReportMetric(med(func(s redisGapSample) float64 { return s.gapP99 }), "gap-p99-ms")
			b.ReportMetric(med(func(s redisGapSample) float64 { return s.freezeGap }), "freeze-gap-ms")
			b.ReportMetric(med(func(s redisGapSample) float64 { return s.freezeToResume }), "freeze-resume-ms")
			b.ReportMetric(med(func(s redisGapSample) float64 { return s.beforeFreeze }), "before-freeze-ms")
			b.ReportMetric(med(func(s redisGapSample) float64 { return s.resumeToAnswer }), "resume-answer-ms")
			b.ReportMetric(med(func(s redisGapSample) float64 { return s.pushMS }), "push-phase-ms")
			b.ReportMetric(med(func(s redisGapSample) float64 { return s.retrans }), "client-retrans")
			b.ReportMetric(med(func(s redisGapSample) float64 { return s.errs }), "errors")
			b.ReportMetric(med(func(s redisGapSample) float64 { return s.reconnects }), "reconnects")
			var sb strings.Builder
			fmt.Fprintf(&sb, "where the freeze's gap went, ms, median of %d (each phase from the end of the one before):\n", len(runs))
			for i, ph := range gapPhases {
				fmt.Fprintf(&sb, "%8.1f  %s\n", med(func(s redisGapSample) float64 { return s.phases[i] }), ph.what)
			}
			b.Log(sb.String())
		})
	}
}

// redisGapSample is one iteration, in ms where a time.
type redisGapSample struct {
	gapMax, gapP99  float64
	freezeGap       float64
	freezeToResume  float64
	beforeFreeze    float64
	resumeToAnswer  float64
	pushMS          float64
	retrans         float64
	errs            float64
	reconnects      float64
	phases          []float64 // gapPhases, each from the end of the one before
	ops             int
	load            float64
	frozenAt, gapAt time.Time
}

// redisGapOnce sets up redis with keys keys, migrates it under the client
// and measures.
func redisGapOnce(b *testing.B, keys int) redisGapSample {
	b.Helper()
	s := redisGapSample{load: loadAvg(b)}
	r := newRedisLazy(b, keys)
	retrans0 := clientRetrans(b, r.rc)
	var pcap *packetCapture
	if os.Getenv("LAZYCR_BENCH_REDIS_PCAP") == "1" {
		pcap = capturePackets(b, r)
	}
	c := r.startClient()
	c.waitOps(b, 100)
	m := r.migrate(b, lazycrTimeout*time.Duration(1+keys/1000000))
	defer r.release(b, m)
	c.waitOps(b, c.ops.Load()+100)
	run := c.finish()
	s.errs, s.reconnects = float64(run.errs), float64(run.reconnects)
	if run.errs > 0 || run.reconnects > 0 {
		b.Errorf("client: %d errors, %d reconnects in %d operations; first: %v", run.errs, run.reconnects, run.ops, run.firstErr)
		return s
	}
	s.retrans = float64(clientRetrans(b, r.rc) - retrans0)
	r.check(b)
	if n := r.connsReceived(b); n != r.conns {
		b.Errorf("redis accepted %d connections since the set-up: the client reconnected", n-r.conns)
	}
	l, sv := m.dstStats.Lazy, m.srcStats.Serve
	s.ops = run.ops
	s.gapMax, s.gapP99 = ms(run.maxGap), ms(run.p99())
	s.freezeToResume, s.pushMS = l.FreezeToResumeMS, l.PushPhaseMS
	s.frozenAt = sv.FrozenAt
	// The freeze's gap is the one the resume fell in: no answer comes
	// between the freeze and the resume (the last one before it may come
	// just after the freeze began: the reply was on its way, and
	// before-freeze is then slightly negative).
	resumed := s.frozenAt.Add(time.Duration(l.FreezeToResumeMS * float64(time.Millisecond)))
	gapStart, gapEnd, ok := run.gapAt(resumed)
	if !ok {
		b.Fatalf("the resume at %v is in no gap between the client's answers", resumed)
	}
	s.freezeGap = ms(gapEnd.Sub(gapStart))
	s.beforeFreeze = ms(s.frozenAt.Sub(gapStart))
	s.resumeToAnswer = ms(gapEnd.Sub(resumed))
	b.Logf("%d keys, load %.2f: %d operations; gap max %.1f ms p99 %.3f ms; the freeze's gap %.1f ms; freeze→resume %.1f ms (source: dump %.1f ms of which freeze %.1f; target: fetch %.1f ms, restore %.1f ms); before freeze %.1f ms, resume→answer %.1f ms; push %.0f ms; client retransmits %.0f",
		keys, s.load, s.ops, s.gapMax, s.gapP99, s.freezeGap, s.freezeToResume, m.srcStats.Dump.TotalMS, m.srcStats.Dump.FreezeMS,
		l.FetchMS, m.dstStats.Restore.TotalMS, s.beforeFreeze, s.resumeToAnswer, s.pushMS, s.retrans)
	var pkts []timedLine
	if pcap != nil {
		pkts = pcap.stop(b)
	}
	b.Log(gapTimeline(m, pkts, gapStart, gapEnd))
	s.phases = phaseTimes(m, gapStart, s.frozenAt, gapEnd)
	return s
}

// gapTimeline lists the log lines of both lazycr runs from shortly before
// the gap to shortly after it, in ms from the gap's start (one clock: the
// hosts are network namespaces of this machine).
func gapTimeline(m *redisMigration, pkts []timedLine, from, to time.Time) string {
	type ev = timedLine
	evs := []ev{{from, "client: last answer before the gap"}, {to, "client: first answer after the gap"}}
	for _, p := range pkts {
		if p.at.After(from.Add(-2*time.Millisecond)) && p.at.Before(to.Add(2*time.Millisecond)) {
			evs = append(evs, ev{p.at, "A's eth0: " + p.what})
		}
	}
	for _, side := range []struct {
		name string
		run  *lazyRun
	}{{"source", m.src}, {"target", m.dst}} {
		for _, e := range logEvents(side.run) {
			if e.Time.After(from.Add(-20*time.Millisecond)) && e.Time.Before(to.Add(20*time.Millisecond)) {
				evs = append(evs, ev{e.Time, side.name + ": " + e.Message})
			}
		}
	}
	slices.SortStableFunc(evs, func(a, b ev) int { return a.at.Compare(b.at) })
	var sb strings.Builder
	sb.WriteString("timeline (ms from the client's last answer before the gap):\n")
	for _, e := range evs {
		fmt.Fprintf(&sb, "%9.2f  %s\n", ms(e.at.Sub(from)), e.what)
	}
	return sb.String()
}

// gapPhases are the steps of the freeze's gap, each ending at the first log
// line of side ("source", "target") starting with msg; the first starts at
// the client's last answer, the last ends at its first answer after.
var gapPhases = []struct{ side, msg, what string }{
	{"", "", "last answer → freeze began (negative: the reply was on its way)"},
	{"source", "process frozen", "source: every thread stopped"},
	// The fds (and the network lock taken with them) are read last,
	// after the process state (dump.collect).
	{"source", "memory collected", "source: memory map read (smaps)"},
	{"source", "process state collected", "source: process state"},
	{"source", "skeleton encoded", "source: fds, network lock, skeleton encoded"},
	{"source", "frozen; serving", "source: state written, serving"},
	{"target", "image set decoded", "target: connected, image set fetched and decoded"},
	{"target", "takeover:", "target: network lock, address takeover (netfix)"},
	{"target", "keeper holds the userfaultfd", "target: process built"},
	{"target", "network unlocked", "target: TCP live, lock removed"},
	{"target", "resumed; serving lazy pages", "target: resumed, RESUMED sent, handler starts"},
	{"", "", "resumed → the client's first answer (its request read, faults served)"},
}

// phaseTimes is the duration of each of gapPhases in one run, in ms; a
// phase whose log line is missing gets 0 and the next one spans both.
func phaseTimes(m *redisMigration, gapStart, frozenAt, gapEnd time.Time) []float64 {
	logs := map[string][]logEvent{"source": logEvents(m.src), "target": logEvents(m.dst)}
	out := make([]float64, len(gapPhases))
	prev := gapStart
	for i, ph := range gapPhases {
		end := time.Time{}
		switch {
		case i == 0:
			end = frozenAt
		case i == len(gapPhases)-1:
			end = gapEnd
		default:
			for _, e := range logs[ph.side] {
				if strings.HasPrefix(e.Message, ph.msg) && !e.Time.Before(frozenAt) {
					end = e.Time
					break
				}
			}
		}
		if end.IsZero() {
			continue
		}
		out[i] = ms(end.Sub(prev))
		prev = end
	}
	return out
}

// timedLine is a line of a timeline.
type timedLine struct {
	at   time.Time
	what string
}

// packetCapture is tcpdump on host A's interface, for the timeline
// (LAZYCR_BENCH_REDIS_PCAP=1; tcpdump must be installed).
type packetCapture struct {
	cmd  *exec.Cmd
	file string
	done chan struct{}
}

func capturePackets(b *testing.B, r *redisLazy) *packetCapture {
	b.Helper()
	bin, err := exec.LookPath("tcpdump")
	if err != nil {
		b.Fatal("LAZYCR_BENCH_REDIS_PCAP=1 needs tcpdump")
	}
	pc := &packetCapture{file: filepath.Join(b.TempDir(), "a.pcap"), done: make(chan struct{})}
	pc.cmd = r.hA.Command(r.ctx, bin, "-i", hosts.HostIface, "-n", "-U", "-w", pc.file, "tcp", "port", strconv.Itoa(r.port))
	errR, err := pc.cmd.StderrPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := pc.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(errR)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "listening on") {
				close(ready)
			}
		}
		pc.cmd.Wait()
		close(pc.done)
	}()
	b.Cleanup(func() { pc.cmd.Process.Kill(); <-pc.done })
	select {
	case <-ready:
	case <-pc.done:
		b.Fatal("tcpdump exited")
	case <-time.After(reportTimeout):
		b.Fatal("tcpdump is not listening")
	}
	return pc
}

// stop ends the capture and returns its packets, one line each.
func (pc *packetCapture) stop(b *testing.B) []timedLine {
	b.Helper()
	pc.cmd.Process.Signal(unix.SIGINT)
	<-pc.done
	out, err := exec.Command("tcpdump", "-r", pc.file, "-n", "-tt", "-S").Output()
	if err != nil {
		b.Fatalf("tcpdump -r: %v", err)
	}
	var lines []timedLine
	for l := range strings.Lines(string(out)) {
		ts, rest, _ := strings.Cut(strings.TrimSpace(l), " ")
		sec, frac, _ := strings.Cut(ts, ".")
		s, err1 := strconv.ParseInt(sec, 10, 64)
		us, err2 := strconv.ParseInt(frac, 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		lines = append(lines, timedLine{time.Unix(s, us*1000), rest})
	}
	return lines
}

// clientRetrans is the client socket's count of retransmitted segments
// (TCP_INFO tcpi_total_retrans).
func clientRetrans(b *testing.B, rc *redisConn) uint32 {
	b.Helper()
	sc, err := rc.c.(*net.TCPConn).SyscallConn()
	if err != nil {
		b.Fatal(err)
	}
	var info *unix.TCPInfo
	cerr := sc.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	})
	if err = errors.Join(cerr, err); err != nil {
		b.Fatalf("TCP_INFO of the client: %v", err)
	}
	return info.Total_retrans
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// median of v (0 if empty); v is sorted in place.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}
