package probe

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"github.com/lazycr/lazycr/internal/kabi"
	"golang.org/x/sys/unix"
)

// probeClone3SetTid asks clone3 for a thread whose pid is our own pid. The
// pid is taken, so the kernel refuses with EEXIST when set_tid is supported
// and we hold CAP_CHECKPOINT_RESTORE (EPERM without it; E2BIG, EINVAL or
// ENOSYS when unsupported). CLONE_VM|CLONE_THREAD|CLONE_SIGHAND keeps
// copy_process from duplicating anything before alloc_pid fails, and should
// a thread ever be created, the assembly stub makes it exit at once.
func probeClone3SetTid() Result {
	const name = "clone3-set-tid"
	tid := int32(os.Getpid())
	args := kabi.CloneArgs{
		Flags:      unix.CLONE_VM | unix.CLONE_THREAD | unix.CLONE_SIGHAND,
		SetTid:     unsafe.Pointer(&tid),
		SetTidSize: 1,
	}
	got, err := kabi.Clone3(&args, unix.CLONE_ARGS_SIZE_VER2)
	switch {
	case err == nil:
		return Result{Name: name, Detail: fmt.Sprintf("clone3 created tid %d with our pid %d: impossible, not trusting set_tid", got, tid)}
	case errors.Is(err, unix.EEXIST):
		return Result{Name: name, OK: true, Detail: "clone3 set_tid supported and permitted (EEXIST for a taken pid)"}
	case errors.Is(err, unix.EPERM):
		return Result{Name: name, Denied: true, Detail: "clone3 set_tid not permitted (no CAP_CHECKPOINT_RESTORE): " + err.Error()}
	default:
		return Result{Name: name, Detail: "clone3 set_tid unsupported: " + err.Error()}
	}
}

func probeMmMapSize() Result {
	const name = "prctl-mm-map"
	size, err := kabi.PrctlMmMapSize()
	if err != nil {
		return fail(name, true, fmt.Errorf("read PR_SET_MM_MAP_SIZE: %w", err))
	}
	want := uint32(unsafe.Sizeof(kabi.PrctlMmMap{}))
	r := Result{Name: name, Required: true, OK: size == want, Value: uint64(size),
		Detail: fmt.Sprintf("struct prctl_mm_map is %d bytes", size)}
	if size != want {
		r.Detail += fmt.Sprintf(", lazycr has %d", want)
	}
	return r
}

// probePagemapScan maps 4 pages, touches pages 0 and 2 and asks
// PAGEMAP_SCAN on /proc/self/pagemap for the present ones.
func probePagemapScan() Result {
	const name = "pagemap-scan"
	page := os.Getpagesize()
	m, err := mapMemory(-1, 4*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fail(name, false, err)
	}
	defer m.unmap()
	m.b[0], m.b[2*page] = 1, 1
	fd, err := unix.Open("/proc/self/pagemap", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(name, false, &os.PathError{Op: "open", Path: "/proc/self/pagemap", Err: err})
	}
	defer unix.Close(fd)
	var regions [8]kabi.PageRegion
	start := m.addr
	arg := kabi.PmScanArg{
		Size:         kabi.SizeofPmScanArg,
		Start:        start,
		End:          start + uint64(4*page),
		Vec:          unsafe.Pointer(&regions[0]),
		VecLen:       uint64(len(regions)),
		CategoryMask: kabi.PAGE_IS_PRESENT,
		ReturnMask:   kabi.PAGE_IS_PRESENT,
	}
	n, err := kabi.IoctlRet(fd, kabi.PAGEMAP_SCAN, unsafe.Pointer(&arg))
	if err != nil {
		return fail(name, false, fmt.Errorf("scan [%#x, %#x) of /proc/self/pagemap fd %d: %w", arg.Start, arg.End, fd, err))
	}
	p := uint64(page)
	if n != 2 || regions[0].Start != start || regions[0].End != start+p ||
		regions[1].Start != start+2*p || regions[1].End != start+3*p {
		return Result{Name: name, Detail: fmt.Sprintf("PAGEMAP_SCAN returned %d regions %v, want pages 0 and 2", n, regions[:max(n, 0)])}
	}
	return Result{Name: name, OK: true, Detail: "PAGEMAP_SCAN found the 2 present pages of 4"}
}
