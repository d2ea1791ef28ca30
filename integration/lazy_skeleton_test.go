package integration

import (
	"os/exec"
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
