package probe

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/lazycr/lazycr/internal/kabi"
	"github.com/lazycr/lazycr/uffd"
	"golang.org/x/sys/unix"
)

// RequiredUffdFeatures are the userfaultfd features a lazy restore needs.
const RequiredUffdFeatures = uffd.FeatureEventFork | uffd.FeatureEventRemap | uffd.FeatureEventRemove | uffd.FeatureEventUnmap | uffd.FeatureThreadID

// requiredRangeIoctls must be offered on a registered anonymous range.
var requiredRangeIoctls = []int{kabi.UFFDIO_NR_COPY, kabi.UFFDIO_NR_ZEROPAGE, kabi.UFFDIO_NR_WAKE}

func uffdProbes() []Result {
	return []Result{probeUffdSyscall(), probeDevUffd(), probeUffdFeatures(), probeUffdIoctls()}
}

func probeUffdSyscall() Result {
	const name = "userfaultfd"
	r, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK, 0, 0)
	if errno != 0 {
		return fail(name, true, os.NewSyscallError("userfaultfd", errno))
	}
	unix.Close(int(r))
	return Result{Name: name, Required: true, OK: true, Detail: "userfaultfd(2) works"}
}

func probeDevUffd() Result {
	const name = "dev-userfaultfd"
	f, err := uffd.OpenDev(0)
	if err != nil {
		return fail(name, false, err)
	}
	defer f.Close()
	if _, _, err := f.API(0); err != nil {
		return fail(name, false, err)
	}
	return Result{Name: name, OK: true, Detail: "/dev/userfaultfd USERFAULTFD_IOC_NEW works"}
}

func probeUffdFeatures() Result {
	const name = "uffd-features"
	f, err := uffd.Open(0)
	if err != nil {
		return fail(name, true, err)
	}
	defer f.Close()
	offered, _, err := f.API(0)
	if err != nil {
		return fail(name, true, err)
	}
	res := Result{Name: name, Required: true, Value: uint64(offered),
		Detail: fmt.Sprintf("%#x %s", uint64(offered), strings.Join(offered.Names(), " "))}
	if missing := RequiredUffdFeatures &^ offered; missing != 0 {
		res.Detail += "; missing required " + missing.String()
		return res
	}
	res.OK = true
	return res
}

// probeUffdIoctls registers one anonymous page (MISSING|WP) and one shared
// memfd page (MINOR) and reports the union of the range ioctls offered.
func probeUffdIoctls() Result {
	const name = "uffd-ioctls"
	f, err := uffd.Open(0)
	if err != nil {
		return fail(name, true, err)
	}
	defer f.Close()
	if _, _, err := f.API(0); err != nil {
		return fail(name, true, err)
	}
	page := os.Getpagesize()
	anon, err := mapMemory(-1, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fail(name, true, fmt.Errorf("map a page: %w", err))
	}
	defer anon.unmap()
	ioctls, err := f.Register(anon.addr, uint64(page), uffd.ModeMissing|uffd.ModeWP)
	if err != nil {
		return fail(name, true, err)
	}
	var notes []string
	if minor, err := minorIoctls(f, page); err != nil {
		notes = append(notes, "MINOR on shmem: "+err.Error())
	} else {
		ioctls |= minor
	}
	res := Result{Name: name, Required: true, Value: uint64(ioctls),
		Detail: fmt.Sprintf("%#x %s", uint64(ioctls), strings.Join(kabi.IoctlMaskNames(uint64(ioctls)), " "))}
	var missing []string
	for _, nr := range requiredRangeIoctls {
		if !ioctls.Has(nr) {
			missing = append(missing, kabi.IoctlBitNames[nr])
		}
	}
	if len(missing) > 0 {
		notes = append(notes, "missing required "+strings.Join(missing, " "))
	}
	if len(notes) > 0 {
		res.Detail += "; " + strings.Join(notes, "; ")
	}
	res.OK = len(missing) == 0
	return res
}

func minorIoctls(f *uffd.FD, page int) (uffd.Ioctls, error) {
	mfd, err := unix.MemfdCreate("lazycr-probe", unix.MFD_CLOEXEC)
	if err != nil {
		return 0, os.NewSyscallError("memfd_create", err)
	}
	defer unix.Close(mfd)
	if err := unix.Ftruncate(mfd, int64(page)); err != nil {
		return 0, os.NewSyscallError("ftruncate", err)
	}
	shm, err := mapMemory(mfd, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return 0, err
	}
	defer shm.unmap()
	ioctls, err := f.Register(shm.addr, uint64(page), uffd.ModeMinor)
	if errors.Is(err, unix.EINVAL) {
		return 0, fmt.Errorf("not supported: %w", err)
	}
	return ioctls, err
}
