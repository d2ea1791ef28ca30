package integration

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lazycr/lazycr/demo"
)

// TestUDPMigration is the scenario lazycr exists for, through `demo.Run`
// (what `lazycr demo` runs): a udpp client on host B talks to a server on
// host A and is migrated post-copy to host C. For both udpp builds (C,
// single-threaded; Go, multi-threaded runtime) and both network policies it
// checks what the server and the client themselves report.
func TestUDPMigration(t *testing.T) {
	needRoot(t)
	buildLazycr()
	if lazycrErr != nil {
		t.Fatal(lazycrErr)
	}
	for _, build := range []string{"c", "go"} {
		for _, policy := range []string{"rebind", "takeover"} {
			t.Run(build+"/"+policy, func(t *testing.T) {
				if build == "c" {
					buildC(t, "fill") // skips clearly when gcc is missing
				}
				testUDPMigration(t, build, policy)
			})
		}
	}
}

func testUDPMigration(t *testing.T, build, policy string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	before := netnsNames(t)
	var story strings.Builder
	res, err := demo.Run(ctx, demo.Options{
		Lazycr: lazycrPath, Policy: policy, UDPP: build, Before: 5, After: 10,
		Interval: 50 * time.Millisecond, WorkDir: t.TempDir(), Out: &story,
	})
	t.Logf("story:\n%s", story.String())
	if err != nil {
		t.Fatalf("demo: %v", err)
	}

	// The server got every sequence number once, in order.
	if len(res.Server) < 15 {
		t.Fatalf("server saw %d pings, want at least 15", len(res.Server))
	}
	missing := 0
	for i := 1; i < len(res.Server); i++ {
		prev, cur := res.Server[i-1].Seq, res.Server[i].Seq
		if cur <= prev {
			t.Errorf("server saw ping %d after %d: duplicated or reordered", cur, prev)
		}
		missing += max(0, cur-prev-1)
	}
	if res.Server[0].Seq != 1 {
		t.Errorf("server's first ping is %d, want 1", res.Server[0].Seq)
	}
	// What the server missed was sent while the client was frozen; the
	// client itself counts those as lost. It never sees a pong twice or
	// out of order.
	c := res.Client
	if c.Sent == 0 || c.Received == 0 {
		t.Fatalf("client counters %+v: no traffic", c)
	}
	if c.Duplicated != 0 || c.Reordered != 0 {
		t.Errorf("client counters %+v: duplicated or reordered pongs", c)
	}
	if uint64(missing) > c.Lost {
		t.Errorf("server missed %d pings but the client reports only %d lost (%+v)", missing, c.Lost, c)
	}
	if c.Received+c.Lost != c.Sent {
		t.Errorf("client counters %+v do not add up (received + lost != sent)", c)
	}

	// Who sent them: B's address (or B's service address), then C's.
	first, last := res.Server[0].From, res.Server[len(res.Server)-1].From
	switch policy {
	case "rebind":
		if first.Addr() != res.B || last.Addr() != res.C {
			t.Errorf("rebind: sender went from %s to %s, want %s then %s", first, last, res.B, res.C)
		}
		if first.Port() != last.Port() {
			t.Errorf("rebind: the port changed from %d to %d", first.Port(), last.Port())
		}
	case "takeover":
		for _, p := range res.Server {
			if p.From != first {
				t.Errorf("takeover: ping %d came from %s, want %s throughout", p.Seq, p.From, first)
				break
			}
		}
		if first.Addr() != res.Service {
			t.Errorf("takeover: sender %s, want the service address %s", first, res.Service)
		}
		if res.BStillHasAddr {
			t.Errorf("takeover: B still holds %s after the migration", res.Service)
		}
	}

	// The numbers the demo read from the two lazycr stats files.
	if res.SourceStats == nil || res.SourceStats.Serve == nil || res.TargetStats == nil || res.TargetStats.Lazy == nil {
		t.Errorf("demo result lacks the lazycr stats: source %+v, target %+v", res.SourceStats, res.TargetStats)
	} else if res.FreezeToResume <= 0 || res.SourceStats.Serve.FrozenAt.IsZero() || res.TargetStats.PID != res.TargetPID {
		t.Errorf("demo: freeze to resume %v, frozen at %v, target stats pid %d (client pid %d on C)",
			res.FreezeToResume, res.SourceStats.Serve.FrozenAt, res.TargetStats.PID, res.TargetPID)
	}
	if !res.SourceGone {
		t.Errorf("the original client pid %d is not gone from B", res.SourcePID)
	}
	if res.TargetPID == 0 {
		t.Errorf("no pid for the client on C")
	}
	// Nothing left behind: no namespace, no process.
	for n := range netnsNames(t) {
		if !before[n] && strings.HasPrefix(n, "lzdemo-") {
			t.Errorf("namespace %s left behind", n)
		}
	}
	for _, pid := range []int{res.SourcePID, res.TargetPID} {
		if pid == 0 {
			continue
		}
		if s := procState(pid); !strings.Contains(s, "no such file") && s != "Z" {
			t.Errorf("pid %d still exists (state %s)", pid, s)
		}
	}
}

func netnsNames(t *testing.T) map[string]bool {
	t.Helper()
	ents, err := os.ReadDir("/run/netns")
	out := map[string]bool{}
	if err != nil {
		return out
	}
	for _, e := range ents {
		out[e.Name()] = true
	}
	return out
}
