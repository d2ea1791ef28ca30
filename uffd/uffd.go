package uffd

import (
	"errors"
	"fmt"
	"strings"

	"github.com/lazycr/lazycr/internal/kabi"
	"golang.org/x/sys/unix"
)

// Features is a UFFD_FEATURE_* mask (see kabi.FeatureNames).
type Features uint64

// Feature bits, mirrored from include/uapi/linux/userfaultfd.h.
const (
	FeaturePagefaultFlagWP  Features = kabi.UFFD_FEATURE_PAGEFAULT_FLAG_WP
	FeatureEventFork        Features = kabi.UFFD_FEATURE_EVENT_FORK
	FeatureEventRemap       Features = kabi.UFFD_FEATURE_EVENT_REMAP
	FeatureEventRemove      Features = kabi.UFFD_FEATURE_EVENT_REMOVE
	FeatureMissingHugetlbfs Features = kabi.UFFD_FEATURE_MISSING_HUGETLBFS
	FeatureMissingShmem     Features = kabi.UFFD_FEATURE_MISSING_SHMEM
	FeatureEventUnmap       Features = kabi.UFFD_FEATURE_EVENT_UNMAP
	FeatureSigbus           Features = kabi.UFFD_FEATURE_SIGBUS
	FeatureThreadID         Features = kabi.UFFD_FEATURE_THREAD_ID
	FeatureMinorHugetlbfs   Features = kabi.UFFD_FEATURE_MINOR_HUGETLBFS
	FeatureMinorShmem       Features = kabi.UFFD_FEATURE_MINOR_SHMEM
	FeatureExactAddress     Features = kabi.UFFD_FEATURE_EXACT_ADDRESS
	FeatureWPHugetlbfsShmem Features = kabi.UFFD_FEATURE_WP_HUGETLBFS_SHMEM
	FeatureWPUnpopulated    Features = kabi.UFFD_FEATURE_WP_UNPOPULATED
	FeaturePoison           Features = kabi.UFFD_FEATURE_POISON
	FeatureWPAsync          Features = kabi.UFFD_FEATURE_WP_ASYNC
	FeatureMove             Features = kabi.UFFD_FEATURE_MOVE

	// FeaturesNonCooperative are the events a lazy restore must see so a
	// page the process dropped or moved is never filled with stale data.
	FeaturesNonCooperative = FeatureEventFork | FeatureEventRemap | FeatureEventRemove | FeatureEventUnmap
)

// Names lists the feature names set in f ("EVENT_FORK", ...).
func (f Features) Names() []string { return kabi.FeatureMaskNames(uint64(f)) }

// String is f as "EVENT_FORK|THREAD_ID", or "0".
func (f Features) String() string {
	if f == 0 {
		return "0"
	}
	return strings.Join(f.Names(), "|")
}

// Has reports whether every bit of want is in f.
func (f Features) Has(want Features) bool { return f&want == want }

// Ioctls is a mask of ioctl numbers (bit kabi.UFFDIO_NR_COPY set means
// UFFDIO_COPY is available), as returned by API and Register.
type Ioctls uint64

// Has reports whether the ioctl with number nr (kabi.UFFDIO_NR_*) is in m.
func (m Ioctls) Has(nr int) bool { return m&(1<<nr) != 0 }

// String is m as "WAKE|COPY|ZEROPAGE".
func (m Ioctls) String() string {
	if m == 0 {
		return "0"
	}
	return strings.Join(kabi.IoctlMaskNames(uint64(m)), "|")
}

// Mode is a UFFDIO_REGISTER_MODE_* mask.
type Mode uint64

// Register modes.
const (
	ModeMissing Mode = kabi.UFFDIO_REGISTER_MODE_MISSING
	ModeWP      Mode = kabi.UFFDIO_REGISTER_MODE_WP
	ModeMinor   Mode = kabi.UFFDIO_REGISTER_MODE_MINOR
)

// CopyMode is the mode of Copy, ZeroPage and Poison: the kabi
// UFFDIO_*_MODE_DONTWAKE bit is bit 0 for all of them.
type CopyMode uint64

// Modes of the resolving ioctls.
const (
	// DontWake leaves the faulting threads asleep; a later Wake releases them.
	DontWake CopyMode = kabi.UFFDIO_COPY_MODE_DONTWAKE
	// CopyWP maps the copied page write-protected (UFFDIO_COPY only).
	CopyWP CopyMode = kabi.UFFDIO_COPY_MODE_WP
)

// Sentinel errors of the resolving ioctls (STYLE rule 3). The returned error
// wraps both the sentinel and the *os.SyscallError of the ioctl.
var (
	// ErrExist: the page is already mapped (another path filled it). The
	// faulting thread may still be asleep: Wake the range, do not retry.
	ErrExist = &classErr{"page already present", unix.EEXIST}
	// ErrAgain: the address space is changing (a non-cooperative event is
	// pending) or the copy was partial. Drain events with ReadMsgs and
	// retry what was not done.
	ErrAgain = &classErr{"address space changing, read events and retry", unix.EAGAIN}
	// ErrGone: the process behind the uffd exited or its mm is gone (ESRCH,
	// ENOSPC); stop serving it.
	ErrGone = &classErr{"process gone", unix.ESRCH}
)

type classErr struct {
	msg   string
	errno unix.Errno
}

func (e *classErr) Error() string { return e.msg }

// Unwrap makes errors.Is(ErrExist, unix.EEXIST) hold.
func (e *classErr) Unwrap() error { return e.errno }

// classify maps the errno inside err (an *os.SyscallError) to a sentinel.
func classify(err error) error {
	switch {
	case errors.Is(err, unix.EEXIST):
		return fmt.Errorf("%w: %w", ErrExist, err)
	case errors.Is(err, unix.EAGAIN):
		return fmt.Errorf("%w: %w", ErrAgain, err)
	case errors.Is(err, unix.ESRCH), errors.Is(err, unix.ENOSPC):
		return fmt.Errorf("%w: %w", ErrGone, err)
	}
	return err
}
