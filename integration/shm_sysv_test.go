package integration

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// TestShmSysvRestore dumps a parent and child that share two System V shm
// segments (one keyed, one IPC_PRIVATE marked for destruction); the
// child alone is refused (its parent has the segments attached too). While the
// keyed segment outlives the dumped processes (nobody removed it), a
// restore must refuse, naming the id, and leave nothing behind; once it
// is removed, the restore must bring both segments back with their ids,
// key, size and mode, attached at their addresses in both processes, the
// child's writes reaching the parent (the program checks all of it).
func TestShmSysvRestore(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "sysvcheck"))
	var r struct {
		Pid     int `json:"pid"`
		Child   int `json:"child"`
		ID      int `json:"id"`
		Key     int `json:"key"`
		Private int `json:"private"`
	}
	waitReport(t, p, &r)
	t.Cleanup(func() {
		unix.Kill(r.Child, unix.SIGKILL)
		unix.SysvShmCtl(r.ID, unix.IPC_RMID, nil)
		unix.SysvShmCtl(r.Private, unix.IPC_RMID, nil)
	})
	keys := []string{"sysv", "private", "writer"}
	requireProgress(t, p, keys...)
	// The child alone: its parent, outside the dump, has both attached.
	_, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(r.Child), "-D", filepath.Join(t.TempDir(), "child"))
	requireExit1(t, "dump of the child alone", errOut, code, `System V shm segment \d+ \(key 0x[0-9a-f]+\) has 2 attaches, the tree 1`)
	requireProgress(t, p, keys...)

	dir := dumpKill(t, p)
	waitGone(t, r.Child)
	img := show(t, dir)
	var ids []int32
	for _, o := range img.Tree.Shm {
		if o.Kind == pb.ShmKind_SHM_KIND_SYSV {
			ids = append(ids, o.SysvId)
		}
	}
	if len(ids) != 2 {
		t.Fatalf("image: System V segments %v, want %d and %d", ids, r.ID, r.Private)
	}

	// The keyed segment is still there: the id is taken.
	out, errOut, code := runLazycr(t, "restore", "-D", dir)
	requireExit1(t, "restore while segment "+strconv.Itoa(r.ID)+" exists", errOut, code, "System V shm id or key is taken", "segment "+strconv.Itoa(r.ID))
	if strings.TrimSpace(out) != "" {
		t.Errorf("refused restore printed %q", out)
	}
	if _, err := unix.SysvShmCtl(r.Private, unix.IPC_STAT, &unix.SysvShmDesc{}); err == nil {
		t.Errorf("the refused restore left segment %d behind", r.Private)
	}
	if _, err := unix.SysvShmCtl(r.ID, unix.IPC_RMID, nil); err != nil {
		t.Fatalf("remove segment %d: %v", r.ID, err)
	}

	rp := restoreFrom(t, p, dir)
	requireProgress(t, rp, keys...)
	checkSequence(t, rp, keys...)
	if s := rp.stderr(); s != "" {
		t.Errorf("the tree complains:\n%s", s)
	}
}

// TestShmSysvOtherNamespaceRefused dumps sysvcheck started in an IPC
// namespace of its own: lazycr (in another) cannot read or make its
// segments by id, so the dump is refused saying so, and the processes run
// on.
func TestShmSysvOtherNamespaceRefused(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(buildC(t, "sysvcheck"))
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWIPC}
	p := startCmd(t, cmd)
	var r struct {
		Pid     int `json:"pid"`
		Child   int `json:"child"`
		ID      int `json:"id"`
		Key     int `json:"key"`
		Private int `json:"private"`
	}
	waitReport(t, p, &r)
	t.Cleanup(func() { unix.Kill(r.Child, unix.SIGKILL) })
	keys := []string{"sysv", "private", "writer"}
	requireProgress(t, p, keys...)
	_, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(r.Pid), "-D", filepath.Join(t.TempDir(), "img"))
	requireExit1(t, "dump in another IPC namespace", errOut, code, `System V shared memory of IPC namespace \d+, lazycr runs in \d+`)
	requireProgress(t, p, keys...)
}
