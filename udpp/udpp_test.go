package udpp

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuf is a goroutine-safe output buffer.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestTracker(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sent  int
		pongs []uint64
		want  Stats // after finish
	}{
		{"all", 3, []uint64{1, 2, 3}, Stats{3, 3, 0, 0, 0}},
		{"gap", 5, []uint64{1, 2, 4, 5}, Stats{5, 4, 1, 0, 0}},
		{"tail missing", 5, []uint64{1, 2, 3}, Stats{5, 3, 2, 0, 0}},
		{"dup", 3, []uint64{1, 2, 2, 3, 1}, Stats{3, 3, 0, 2, 0}},
		{"reorder", 4, []uint64{1, 3, 2, 4}, Stats{4, 4, 0, 0, 1}},
		{"late dup", 4, []uint64{2, 1, 1, 4}, Stats{4, 3, 1, 1, 1}},
		{"unsent ignored", 2, []uint64{1, 7, 0, 2}, Stats{2, 2, 0, 0, 0}},
		{"past 64", 130, seq(1, 130), Stats{130, 130, 0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tr tracker
			for range tc.sent {
				tr.sent()
			}
			for _, p := range tc.pongs {
				tr.pong(p)
			}
			tr.finish()
			if tr.st != tc.want {
				t.Fatalf("got %+v, want %+v", tr.st, tc.want)
			}
			if tr.st.Sent != tr.st.Received+tr.st.Lost {
				t.Fatalf("sent != received+lost: %+v", tr.st)
			}
		})
	}
}

func seq(a, b uint64) []uint64 {
	var s []uint64
	for i := a; i <= b; i++ {
		s = append(s, i)
	}
	return s
}

func TestLostBeforeFinish(t *testing.T) {
	var tr tracker
	for range 4 {
		tr.sent()
	}
	tr.pong(1)
	tr.pong(4)
	if tr.st.Lost != 2 {
		t.Fatalf("lost = %d after pongs 1,4; want 2", tr.st.Lost)
	}
	tr.pong(2)
	if tr.st.Lost != 1 || tr.st.Reordered != 1 {
		t.Fatalf("after late pong 2: %+v", tr.st)
	}
}

func TestParseSeq(t *testing.T) {
	for in, want := range map[string]uint64{
		"This is ping packet 1": 1, "This is ping packet 42\x00": 42, "This is ping packet 7\n": 7,
		"This is ping packet 0": 0, "This is ping packet x": 0, "hello": 0, "This is pong packet 3": 0,
	} {
		got, err := parseSeq([]byte(in), pingPrefix)
		if (err != nil) != (want == 0) || got != want {
			t.Errorf("parseSeq(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

// startServer runs s in the background; the returned func stops it.
func startServer(t *testing.T, serve func(ctx context.Context) error) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- serve(ctx) }()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			if err := <-errc; err != nil && err != context.Canceled {
				t.Errorf("server: %v", err)
			}
		})
	}
}

func TestLoopback(t *testing.T) {
	srv, err := Listen(0)
	if err != nil {
		t.Fatal(err)
	}
	var sout, cout syncBuf
	stop := startServer(t, func(ctx context.Context) error { return srv.Serve(ctx, &sout) })
	defer stop()
	const n = 5
	st, err := RunClient(context.Background(), ClientConfig{
		Server: "127.0.0.1", Port: int(srv.Addr().Port()), LocalPort: AnyPort,
		Interval: 5 * time.Millisecond, Count: n, Drain: 10 * time.Second,
	}, &cout)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Stats{Sent: n, Received: n}); st != want {
		t.Fatalf("stats %+v, want %+v", st, want)
	}
	stop() // the deferred call is then a no-op
	CheckServerOutput(t, sout.String(), n)
	CheckClientOutput(t, cout.String(), n, st)
}

// CheckServerOutput checks the three lines per ping 1..n.
func CheckServerOutput(t *testing.T, out string, n int) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3*n {
		t.Fatalf("server printed %d lines, want %d:\n%s", len(lines), 3*n, out)
	}
	for i := range n {
		l := lines[3*i : 3*i+3]
		addr, ok := strings.CutPrefix(l[0], "Received ping packet from ")
		if _, err := netip.ParseAddrPort(addr); !ok || err != nil {
			t.Errorf("line %d = %q", 3*i+1, l[0])
		}
		if want := fmt.Sprintf("Data: This is ping packet %d", i+1); l[1] != want {
			t.Errorf("line %d = %q, want %q", 3*i+2, l[1], want)
		}
		if want := fmt.Sprintf("Sending pong packet %d", i+1); l[2] != want {
			t.Errorf("line %d = %q, want %q", 3*i+3, l[2], want)
		}
	}
}

// CheckClientOutput checks n pong lines (any stats lines between) and a last
// stats line equal to st.
func CheckClientOutput(t *testing.T, out string, n int, st Stats) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(out))
	next, last := 1, ""
	for sc.Scan() {
		l := sc.Text()
		last = l
		if strings.HasPrefix(l, "stats ") {
			continue
		}
		f := strings.Fields(l)
		if len(f) != 4 || f[0] != "pong" || f[1] != strconv.Itoa(next) || f[2] != "from" {
			t.Fatalf("client line %q, want pong %d from IP:PORT", l, next)
		}
		if _, err := netip.ParseAddrPort(f[3]); err != nil {
			t.Fatalf("client line %q: %v", l, err)
		}
		next++
	}
	if next != n+1 {
		t.Fatalf("client printed %d pongs, want %d:\n%s", next-1, n, out)
	}
	if last != st.String() {
		t.Fatalf("last client line %q, want %q", last, st)
	}
}

// fakeServer answers pings through reply, which returns the pong numbers to
// send (in order) for ping n.
func fakeServer(t *testing.T, reply func(n uint64) []uint64) (port int, stop func()) {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 1500)
		for {
			k, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			n, err := parseSeq(buf[:k], pingPrefix)
			if err != nil {
				t.Errorf("fake server got %q", buf[:k])
				continue
			}
			for _, m := range reply(n) {
				conn.WriteToUDPAddrPort([]byte(pongPrefix+strconv.FormatUint(m, 10)), from)
			}
		}
	})
	return conn.LocalAddr().(*net.UDPAddr).Port, func() { conn.Close(); wg.Wait() }
}

func runAgainst(t *testing.T, reply func(n uint64) []uint64, count int) Stats {
	t.Helper()
	port, stop := fakeServer(t, reply)
	defer stop()
	var out syncBuf
	st, err := RunClient(context.Background(), ClientConfig{
		Server: "127.0.0.1", Port: port, LocalPort: AnyPort,
		Interval: 2 * time.Millisecond, Count: count, Drain: 10 * time.Second,
	}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(out.String(), st.String()+"\n") {
		t.Fatalf("output does not end with %q:\n%s", st, out.String())
	}
	return st
}

func TestClientCountsLost(t *testing.T) {
	// Every third pong is dropped: 3 and 6 of 7.
	st := runAgainst(t, func(n uint64) []uint64 {
		if n%3 == 0 {
			return nil
		}
		return []uint64{n}
	}, 7)
	if want := (Stats{Sent: 7, Received: 5, Lost: 2}); st != want {
		t.Fatalf("stats %+v, want %+v", st, want)
	}
}

func TestClientCountsDuplicate(t *testing.T) {
	st := runAgainst(t, func(n uint64) []uint64 {
		if n == 2 {
			return []uint64{2, 2}
		}
		return []uint64{n}
	}, 4)
	if want := (Stats{Sent: 4, Received: 4, Duplicated: 1}); st != want {
		t.Fatalf("stats %+v, want %+v", st, want)
	}
}

func TestClientCountsReordered(t *testing.T) {
	// Pong 2 is held back and sent after pong 3.
	st := runAgainst(t, func(n uint64) []uint64 {
		switch n {
		case 2:
			return nil
		case 3:
			return []uint64{3, 2}
		}
		return []uint64{n}
	}, 4)
	if want := (Stats{Sent: 4, Received: 4, Reordered: 1}); st != want {
		t.Fatalf("stats %+v, want %+v", st, want)
	}
}

func TestClientStatsNowAndCancel(t *testing.T) {
	port, stop := fakeServer(t, func(n uint64) []uint64 { return []uint64{n} })
	defer stop()
	pr, pw := net.Pipe()
	defer pr.Close()
	sig := make(chan os.Signal, 1)
	ctx, cancel := context.WithCancel(context.Background())
	type res struct {
		st  Stats
		err error
	}
	resc := make(chan res, 1)
	go func() {
		st, err := RunClient(ctx, ClientConfig{
			Server: "127.0.0.1", Port: port, LocalPort: AnyPort, Interval: time.Millisecond,
			StatsEvery: time.Hour, StatsNow: sig,
		}, pw)
		pw.Close()
		resc <- res{st, err}
	}()
	sc := bufio.NewScanner(pr)
	// Wait for pong 3, ask for stats, and expect a stats line next after
	// some pongs.
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "pong 3 ") {
	}
	sig <- os.Interrupt
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "stats ") {
	}
	if !strings.HasPrefix(sc.Text(), "stats sent=") {
		t.Fatalf("no stats line after StatsNow: %q %v", sc.Text(), sc.Err())
	}
	cancel()
	var last string
	for sc.Scan() {
		last = sc.Text()
	}
	r := <-resc
	if r.err != context.Canceled {
		t.Fatalf("RunClient after cancel: %v", r.err)
	}
	if last != r.st.String() || r.st.Sent != r.st.Received+r.st.Lost {
		t.Fatalf("last line %q, stats %+v", last, r.st)
	}
}
