package demo

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lazycr/lazycr/udpp"
)

func write(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseServer(t *testing.T) {
	p := write(t, "server.log", `Received ping packet from 10.1.0.2:38374
Data: This is ping packet 1
Sending pong packet 1
Received ping packet from 10.1.0.3:38374
Data: This is ping packet 2
Sending pong packet 2
Received ping packet from 10.1.0.3:38374
Data: garbage
Ignoring malformed packet
`)
	got := parseServer(p)
	want := []Ping{
		{1, netip.MustParseAddrPort("10.1.0.2:38374")},
		{2, netip.MustParseAddrPort("10.1.0.3:38374")},
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("parseServer = %v, want %v", got, want)
	}
}

func TestLastStatsAndPongs(t *testing.T) {
	p := write(t, "client.log", `pong 1 from 10.1.0.1:7000
stats sent=1 received=1 lost=0 duplicated=0 reordered=0
pong 2 from 10.1.0.1:7000
pong 4 from 10.1.0.1:7000
stats sent=4 received=3 lost=1 duplicated=2 reordered=5
`)
	if got, want := lastStats(p), (udpp.Stats{Sent: 4, Received: 3, Lost: 1, Duplicated: 2, Reordered: 5}); got != want {
		t.Errorf("lastStats = %+v, want %+v", got, want)
	}
	if n := countPongs(p); n != 3 {
		t.Errorf("countPongs = %d, want 3", n)
	}
}

func TestSummaryOf(t *testing.T) {
	log := `12:00:00 INF resumed
freeze to resume   50ms
faults 3 (request 2, push 1), next-page faults 0
latency p50 40µs p90 50µs p99 60µs max 70µs
      0-1       µs        0 
     32-64      µs        3 ###
trace              /tmp/x.json (open in ui.perfetto.dev)
`
	want := "faults 3 (request 2, push 1), next-page faults 0\nlatency p50 40µs p90 50µs p99 60µs max 70µs\n     32-64      µs        3 ###"
	if got := summaryOf(log); got != want {
		t.Errorf("summaryOf =\n%q\nwant\n%q", got, want)
	}
}

func TestGapAfter(t *testing.T) {
	ft := time.Date(2026, 11, 27, 10, 0, 0, 5e8, time.UTC) // the source's stats: serve.frozen_at
	tl := &timedTail{done: make(chan struct{}), times: []time.Time{ft.Add(-time.Second), ft.Add(40 * time.Millisecond), ft.Add(120 * time.Millisecond)}}
	if gap := tl.gapAfter(ft, ft); gap != 40*time.Millisecond {
		t.Errorf("gapAfter = %v, want 40ms", gap)
	}
	// A pong while the freeze was still stopping threads (60 ms) is the
	// original's, not C's.
	if gap := tl.gapAfter(ft, ft.Add(60*time.Millisecond)); gap != 120*time.Millisecond {
		t.Errorf("gapAfter with a 60 ms freeze = %v, want 120ms", gap)
	}
	if ms := msDuration(120.5); ms != 120500*time.Microsecond {
		t.Errorf("msDuration(120.5) = %v", ms)
	}
	if gap := tl.gapAfter(time.Time{}, time.Time{}); gap != 0 {
		t.Errorf("gapAfter(zero) = %v, want 0", gap)
	}
}
