package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"
)

// sessionReport is the report of testdata/progs/sessions.c.
type sessionReport struct {
	Pid  int `json:"pid"`
	Sid  int `json:"sid"`
	Pgid int `json:"pgid"`
}

// TestTreeSessionSingle restores single processes that lead their session,
// lead a group of the test's session, or live on in a session (and group)
// whose leader has exited: after restore each must report the session and
// process group it had (getsid(0), getpgid(0)), not lazycr's.
func TestTreeSessionSingle(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "sessions")
	for _, mode := range []string{"leader", "group", "orphan", "orphan-group"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			started := start(t, bin, mode)
			p, r := sessionsProcess(t, started)
			switch mode {
			case "leader":
				if r.Sid != r.Pid || r.Pgid != r.Pid {
					t.Fatalf("leader reports %+v, want sid = pgid = pid", r)
				}
			case "group":
				if r.Pgid != r.Pid || r.Sid == r.Pid {
					t.Fatalf("group leader reports %+v, want pgid = pid in the test's session", r)
				}
			case "orphan", "orphan-group":
				if r.Sid != started.pid {
					t.Fatalf("orphan reports %+v, want sid %d (its exited parent)", r, started.pid)
				}
				if want := map[bool]int{true: r.Pid, false: started.pid}[mode == "orphan-group"]; r.Pgid != want {
					t.Fatalf("orphan reports %+v, want pgid %d", r, want)
				}
				// The leader is gone (reaped by the test): the session
				// and group live on through the child only.
				<-started.done
			}
			key := fmt.Sprintf("ids:%d:%d", r.Sid, r.Pgid)
			requireProgress(t, p, key)
			rp := restoreFrom(t, p, dumpKill(t, p))
			if rp.pid != r.Pid {
				t.Fatalf("restored as pid %d, want %d", rp.pid, r.Pid)
			}
			requireProgress(t, rp, key)
			checkSequence(t, rp, key)
		})
	}
}

// sessionsProcess waits for the report of a sessions program started as p
// and returns the process that reports (p itself, or in the orphan modes
// its child, which p leaves behind) with its report.
func sessionsProcess(t *testing.T, p *proc) (*proc, sessionReport) {
	t.Helper()
	deadline := time.Now().Add(reportTimeout)
	var line []byte
	for {
		b, err := os.ReadFile(p.outPath)
		if err != nil {
			t.Fatal(err)
		}
		if l, _, ok := bytes.Cut(b, []byte("\n")); ok {
			line = l
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d: no report within %v; stderr:\n%s", p.pid, reportTimeout, p.stderr())
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
	var r sessionReport
	if err := json.Unmarshal(line, &r); err != nil {
		t.Fatalf("decode report %q: %v", line, err)
	}
	t.Logf("report: %s", line)
	if r.Pid == p.pid {
		p.mu.Lock()
		p.off = int64(len(line) + 1)
		p.mu.Unlock()
		return p, r
	}
	c := adopt(t, r.Pid)
	c.outPath, c.errPath, c.off = p.outPath, p.errPath, int64(len(line)+1)
	return c, r
}
