package integration

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestLazySkeletonBigShm migrates shmbig (a parent and a child sharing
// 300 MiB of MAP_SHARED anonymous memory, the init of its own PID
// namespace) with dump --lazy / restore --lazy-from --pidns. Shared memory
// travels in the skeleton, which was refused above 256 MiB after the
// freeze ("image files exceed 268435456 bytes"); it is now streamed from
// the frozen process and the target takes what it can hold. On the target
// the parent keeps checking every byte of the memory ("verified") and
// seeing the child's writes through it ("shared").
func TestLazySkeletonBigShm(t *testing.T) {
	cmd := exec.Command(buildC(t, "shmbig"), "300")
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID}
	p := startCmd(t, cmd)
	var r struct {
		Pid   int `json:"pid"`
		Child int `json:"child"`
		MiB   int `json:"mib"`
	}
	waitReport(t, p, &r)
	if r.MiB != 300 {
		t.Fatalf("shmbig reports %d MiB, want 300", r.MiB)
	}
	keys := []string{"verified", "shared", "writer"}
	requireProgress(t, p, keys...)
	rp, _ := migrateLazyPIDNS(t, lazyEnv{}, p)
	requireProgress(t, rp, keys...)
	if s := rp.stderr(); s != "" {
		t.Errorf("the tree complains:\n%s", s)
	}
}

// TestLazySourceRefusalReachesTarget: the target is started first and
// waits for the source; the source (dump --lazy of shmcheck's child alone,
// whose shared memory its parent outside the tree maps too) refuses after
// the freeze. The target must print the source's reason, not "connection
// refused" or a reset, and both processes run on, never left stopped.
func TestLazySourceRefusalReachesTarget(t *testing.T) {
	t.Parallel()
	p, r := startShmcheck(t)
	keys := []string{"anon", "memfd", "devshm", "sem", "writer"}
	requireProgress(t, p, keys...)
	// A free port for both command lines (the target connects first).
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	from := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	dst := startLazyRun(t, "target lazycr restore --lazy-from "+from, lazyCmd(t, nil, "restore", "--lazy-from", from, "--new-pid", "--wait-source", "60s"))
	dst.waitLine(t, true, "the target waiting for the source", lazycrTimeout, func(l string) bool {
		return strings.Contains(l, "waiting for the page server")
	})
	src := startLazyRun(t, "source lazycr dump --lazy", lazyCmd(t, nil, "dump", "--lazy", "--pid", strconv.Itoa(r.Child), "--address", "127.0.0.1", "--port", strconv.Itoa(port)))
	reason := fmt.Sprintf("pid %d, outside the tree, maps the shared memory object", r.Pid)
	src.requireExit(t, 1)
	if _, e := src.output(); !strings.Contains(e, reason) {
		t.Errorf("source stderr does not name the refusal %q:\n%s", reason, e)
	}
	dst.requireExit(t, 1)
	_, e := dst.output()
	if !strings.Contains(e, "refused by the page server") || !strings.Contains(e, reason) {
		t.Errorf("target stderr does not give the source's reason %q:\n%s", reason, e)
	}
	requireProgress(t, p, keys...)
	requireRunning(t, r.Child)
}
