package integration

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestQA8GoKeepAliveRestored: a Go HTTP server with a kept-alive client
// connection is dumped and restored (qa8 Q1). Go 1.24+ listens with
// MPTCP; a connection it accepts from a plain TCP client fell back to TCP
// and reads SO_RCVLOWAT 0, which setsockopt cannot set (it stores val ?: 1,
// and 0 acts as 1), so every restore or migration of a Go server with an
// open client connection failed with "SO_RCVLOWAT is 1 after setting 0".
func TestQA8GoKeepAliveRestored(t *testing.T) {
	t.Parallel()
	p := start(t, buildGo(t, "qa8_keepalive"))
	var r struct {
		Pid      int `json:"pid"`
		Port     int `json:"port"`
		Protocol int `json:"protocol"`
		Rcvlowat int `json:"rcvlowat"`
	}
	waitReport(t, p, &r)
	t.Logf("listener protocol %d, accepted connection's SO_RCVLOWAT %d", r.Protocol, r.Rcvlowat)
	requireProgress(t, p, "served")

	rp := restoreFrom(t, p, dumpKill(t, p))
	requireProgress(t, rp, "served")
	checkSequence(t, rp, "served")
}

// TestQA8SysvLeftRemoved: after a finished lazy migration the source
// removes the System V segment the killed original leaves (qa8 Q5). The
// target (in an IPC namespace of its own, as another host would be) made
// it again; the source's stale copy kept its memory until `ipcrm` and its
// id, so migrating the process back was refused ("the id is taken here";
// postgres, whose control segment is one).
func TestQA8SysvLeftRemoved(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "qa8_sysv"))
	var r struct {
		Pid int `json:"pid"`
		ID  int `json:"id"`
	}
	waitReport(t, p, &r)
	t.Cleanup(func() { unix.SysvShmCtl(r.ID, unix.IPC_RMID, nil) })
	requireProgress(t, p, "ok")

	progress(t, p)
	src := startLazySource(t, nil, p.pid, "127.0.0.1")
	args := []string{"restore", "--lazy-from", src.addr, "--new-pid"}
	cmd := lazyCmd(t, nil, args...)
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWIPC}
	dst := startLazyRun(t, "target lazycr "+strings.Join(args, " "), cmd)
	rp := adopt(t, lazyResumedPID(t, dst))
	t.Cleanup(func() { unix.Kill(rp.pid, unix.SIGKILL) })
	rp.continueOutput(p, true)
	dst.requireExit(t, 0)
	src.requireExit(t, 0)
	requireLazySourceGone(t, p)
	requireProgress(t, rp, "ok")

	var d unix.SysvShmDesc
	if _, err := unix.SysvShmCtl(r.ID, unix.IPC_STAT, &d); !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EIDRM) {
		t.Errorf("System V segment %d of the migrated process is still on the source (%d bytes, %d attaches; shmctl: %v)", r.ID, d.Segsz, d.Nattch, err)
	}
}
