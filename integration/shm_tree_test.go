package integration

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// TestShmTreeRestore dumps and restores a parent and child that share
// anonymous shared memory, a memfd mapping, a deleted POSIX shm segment
// and an unlinked named semaphore, all made before the fork, plus a second
// mapping (mremap) of the anonymous memory in the parent: after restore
// the child's writes must still reach the parent through every object, a
// write through the alias must read back through the first mapping, and
// the data written before the dump must be intact. The image must hold
// each object once, its content once.
func TestShmTreeRestore(t *testing.T) {
	t.Parallel()
	p, r := startShmcheck(t)
	keys := []string{"anon", "memfd", "devshm", "sem", "alias", "writer"}
	requireProgress(t, p, keys...)

	dir := dumpKill(t, p)
	waitGone(t, r.Child)
	img := show(t, dir)
	kinds := map[pb.ShmKind]int{}
	for _, o := range img.Tree.Shm {
		kinds[o.Kind]++
	}
	// anon; memfd; the shm segment and the semaphore are deleted files.
	if want := map[pb.ShmKind]int{pb.ShmKind_SHM_KIND_ANON: 1, pb.ShmKind_SHM_KIND_MEMFD: 1, pb.ShmKind_SHM_KIND_DELETED_FILE: 2}; fmt.Sprint(kinds) != fmt.Sprint(want) {
		t.Errorf("image: shared memory objects %v, want %v", kinds, want)
	}
	// The anonymous object is mapped three times (parent twice, child
	// once); its 4 pages are eager once, in the first mapping.
	var maps, eager int
	for _, pid := range []int{r.Pid, r.Child} {
		for _, v := range img.Memory[uint32(pid)].GetVmas() {
			if v.Shm == 0 || shmObject(img, v.Shm).Kind != pb.ShmKind_SHM_KIND_ANON {
				continue
			}
			maps++
			for _, run := range v.Pages {
				if run.State == pb.PageState_PAGE_STATE_EAGER {
					eager += int(run.Npages)
				}
			}
		}
	}
	if maps != 3 || eager != 4 { // every page holds data
		t.Errorf("image: the anonymous object has %d mappings and %d eager pages, want 3 and 4", maps, eager)
	}

	rp := restoreFrom(t, p, dir)
	if got := statField(t, r.Child, 4); got != fmt.Sprint(r.Pid) {
		t.Errorf("child %d has parent %s after restore, want %d", r.Child, got, r.Pid)
	}
	requireProgress(t, rp, keys...)
	checkSequence(t, rp, "alias", "writer")
	if s := rp.stderr(); s != "" {
		t.Errorf("the tree complains:\n%s", s)
	}
}

// shmObject is the shared memory object id of img.
func shmObject(img *imageSet, id uint32) *pb.ShmObject {
	for _, o := range img.Tree.Shm {
		if o.Id == id {
			return o
		}
	}
	return &pb.ShmObject{}
}

// TestShmFdRestore dumps a parent and child that share a memfd and an
// unlinked /dev/shm file, each both mapped and held as an fd: after
// restore, what the child writes through the mapping (memfd) or the fd
// (file) must reach the parent through the other (pread, mapping), the
// memfd keeping its size and seals and the data written before the dump.
// The image holds each object once, with its content in the fd images
// only.
func TestShmFdRestore(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "shmfdcheck"))
	var r struct {
		Pid   int `json:"pid"`
		Child int `json:"child"`
	}
	waitReport(t, p, &r)
	t.Cleanup(func() { unix.Kill(r.Child, unix.SIGKILL) })
	keys := []string{"memfd", "devshm", "writer"}
	requireProgress(t, p, keys...)

	dir := dumpKill(t, p)
	waitGone(t, r.Child)
	img := show(t, dir)
	if n := len(img.Tree.Shm); n != 2 {
		t.Errorf("image: %d shared memory objects, want 2: %v", n, img.Tree.Shm)
	}
	for _, o := range img.Tree.Shm {
		if !o.FdContent {
			t.Errorf("image: object %d (%s %s) does not say its content is in the fd images", o.Id, o.Kind, o.Name)
		}
	}
	for _, pid := range []int{r.Pid, r.Child} {
		for _, v := range img.Memory[uint32(pid)].GetVmas() {
			for _, run := range v.Pages {
				if v.Shm != 0 && run.State == pb.PageState_PAGE_STATE_EAGER {
					t.Errorf("image: pid %d vma %#x-%#x of object %d has eager pages", pid, v.Start, v.End, v.Shm)
				}
			}
		}
	}

	rp := restoreFrom(t, p, dir)
	requireProgress(t, rp, keys...)
	checkSequence(t, rp, keys...)
	if s := rp.stderr(); s != "" {
		t.Errorf("the tree complains:\n%s", s)
	}
}

// TestShmSharedOutsideRefused dumps only the child of shmcheck: its
// shared memory is also its (not dumped) parent's, which a restore could
// not share again, so the dump is refused naming the parent, and both run
// on, the memory still shared.
func TestShmSharedOutsideRefused(t *testing.T) {
	t.Parallel()
	p, r := startShmcheck(t)
	keys := []string{"anon", "memfd", "devshm", "sem", "writer"}
	requireProgress(t, p, keys...)
	_, errOut, code := runLazycr(t, "dump", "--pid", fmt.Sprint(r.Child), "-D", filepath.Join(t.TempDir(), "img"))
	requireExit1(t, "dump of the child alone", errOut, code, fmt.Sprintf(`pid %d, outside the tree, maps the shared memory object`, r.Pid))
	requireProgress(t, p, keys...)
}

// TestShmTreeLazyPIDNS migrates shmcheck, the init of its own PID
// namespace, with dump --lazy / restore --lazy-from --pidns: the shared
// memory objects travel in the skeleton (eager) and are made once on the
// target, the members — in a child PID namespace of lazycr's — map them
// through /proc/<lazycr>/fd. Every object must still be shared.
func TestShmTreeLazyPIDNS(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(buildC(t, "shmcheck"))
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID}
	p := startCmd(t, cmd)
	var r struct {
		Pid   int `json:"pid"`
		Child int `json:"child"`
	}
	waitReport(t, p, &r)
	keys := []string{"anon", "memfd", "devshm", "sem", "alias", "writer"}
	requireProgress(t, p, keys...)
	rp, _ := migrateLazyPIDNS(t, lazyEnv{}, p)
	requireProgress(t, rp, keys...)
	checkSequence(t, rp, "alias", "writer")
	if s := rp.stderr(); s != "" {
		t.Errorf("the tree complains:\n%s", s)
	}
}

// shmReport is shmcheck's report: the parent and its child sharing memory.
type shmReport struct {
	Pid   int `json:"pid"`
	Child int `json:"child"`
}

// startShmcheck starts shmcheck and waits for its report; its child is
// killed at the end of the test.
func startShmcheck(t *testing.T) (*proc, shmReport) {
	t.Helper()
	p := start(t, buildC(t, "shmcheck"))
	var r shmReport
	waitReport(t, p, &r)
	t.Cleanup(func() { unix.Kill(r.Child, unix.SIGKILL) })
	return p, r
}
