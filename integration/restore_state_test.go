package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// TestRestoreCredsAndTimers round-trips a process that runs as an ordinary
// user (uid/gid 65534, no supplementary groups) with a POSIX timer and an
// itimer, at nice 7: after restore it must still be that user at nice 7
// (F3), and both timers must keep firing (the POSIX timer under its
// original id).
func TestRestoreCredsAndTimers(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "statecheck", "-lrt")
	// The binary lives under t.TempDir() (0700 directories): let the
	// unprivileged user reach it.
	for d := filepath.Dir(bin); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	p := startWith(t, func(c *exec.Cmd) {
		c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	}, bin)
	var r struct {
		Pid     int   `json:"pid"`
		UID     int   `json:"uid"`
		GID     int   `json:"gid"`
		TimerID int64 `json:"timer_id"`
	}
	waitReport(t, p, &r)
	if r.UID != 65534 || r.GID != 65534 {
		t.Fatalf("statecheck runs as %d/%d, want 65534/65534", r.UID, r.GID)
	}
	keys := []string{"creds:65534:65534:65534:0:dumpable1:nice7", "timer", "itimer"}
	requireProgress(t, p, keys...)

	rp := restoreFrom(t, p, dumpKill(t, p))
	requireProgress(t, rp, keys...)
	checkSequence(t, rp, "creds:65534:65534:65534:0:dumpable1:nice7")
}
