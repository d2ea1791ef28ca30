package kabi

import (
	"math/bits"
	"strings"
)

// Constants from include/uapi/linux/userfaultfd.h (Linux 6.18). See also
// Documentation/admin-guide/mm/userfaultfd.rst and userfaultfd(2),
// ioctl_userfaultfd(2).

// UFFD_API is the only API version; it goes in UffdioAPI.API.
const UFFD_API = 0xAA

// UFFDIO is the ioctl type byte of all userfaultfd ioctls.
const UFFDIO = 0xAA

// Ioctl numbers (the nr field), C: _UFFDIO_REGISTER ... _UFFDIO_API. They are
// also the bit positions of the ioctls masks returned by UFFDIO_API and
// UFFDIO_REGISTER.
const (
	UFFDIO_NR_REGISTER     = 0x00 // C: _UFFDIO_REGISTER
	UFFDIO_NR_UNREGISTER   = 0x01 // C: _UFFDIO_UNREGISTER
	UFFDIO_NR_WAKE         = 0x02 // C: _UFFDIO_WAKE
	UFFDIO_NR_COPY         = 0x03 // C: _UFFDIO_COPY
	UFFDIO_NR_ZEROPAGE     = 0x04 // C: _UFFDIO_ZEROPAGE
	UFFDIO_NR_MOVE         = 0x05 // C: _UFFDIO_MOVE
	UFFDIO_NR_WRITEPROTECT = 0x06 // C: _UFFDIO_WRITEPROTECT
	UFFDIO_NR_CONTINUE     = 0x07 // C: _UFFDIO_CONTINUE
	UFFDIO_NR_POISON       = 0x08 // C: _UFFDIO_POISON
	UFFDIO_NR_API          = 0x3F // C: _UFFDIO_API
)

// IoctlBitNames names the bits of an ioctls mask (UffdioAPI.Ioctls,
// UffdioRegister.Ioctls), indexed by bit number.
var IoctlBitNames = map[int]string{
	UFFDIO_NR_REGISTER:     "REGISTER",
	UFFDIO_NR_UNREGISTER:   "UNREGISTER",
	UFFDIO_NR_WAKE:         "WAKE",
	UFFDIO_NR_COPY:         "COPY",
	UFFDIO_NR_ZEROPAGE:     "ZEROPAGE",
	UFFDIO_NR_MOVE:         "MOVE",
	UFFDIO_NR_WRITEPROTECT: "WRITEPROTECT",
	UFFDIO_NR_CONTINUE:     "CONTINUE",
	UFFDIO_NR_POISON:       "POISON",
	UFFDIO_NR_API:          "API",
}

// IoctlMaskNames lists the names of the bits set in an ioctls mask, lowest
// bit first; unknown bits read "bit<N>".
func IoctlMaskNames(mask uint64) []string {
	var out []string
	for mask != 0 {
		b := bits.TrailingZeros64(mask)
		mask &^= 1 << b
		if n, ok := IoctlBitNames[b]; ok {
			out = append(out, n)
		} else {
			out = append(out, "bit"+itoa(b))
		}
	}
	return out
}

// UFFD_FEATURE_* bits of UffdioAPI.Features.
const (
	UFFD_FEATURE_PAGEFAULT_FLAG_WP         = 1 << 0
	UFFD_FEATURE_EVENT_FORK                = 1 << 1
	UFFD_FEATURE_EVENT_REMAP               = 1 << 2
	UFFD_FEATURE_EVENT_REMOVE              = 1 << 3
	UFFD_FEATURE_MISSING_HUGETLBFS         = 1 << 4
	UFFD_FEATURE_MISSING_SHMEM             = 1 << 5
	UFFD_FEATURE_EVENT_UNMAP               = 1 << 6
	UFFD_FEATURE_SIGBUS                    = 1 << 7
	UFFD_FEATURE_THREAD_ID                 = 1 << 8
	UFFD_FEATURE_MINOR_HUGETLBFS           = 1 << 9
	UFFD_FEATURE_MINOR_SHMEM               = 1 << 10
	UFFD_FEATURE_EXACT_ADDRESS             = 1 << 11
	UFFD_FEATURE_WP_HUGETLBFS_SHMEM        = 1 << 12
	UFFD_FEATURE_WP_UNPOPULATED            = 1 << 13
	UFFD_FEATURE_POISON                    = 1 << 14
	UFFD_FEATURE_WP_ASYNC                  = 1 << 15
	UFFD_FEATURE_MOVE                      = 1 << 16
	uffdFeatureLast                        = UFFD_FEATURE_MOVE
	UFFD_FEATURE_ALL_KNOWN          uint64 = uffdFeatureLast<<1 - 1 // every bit this package knows
)

// FeatureNames maps each UFFD_FEATURE_* bit to its name without the
// UFFD_FEATURE_ prefix, in bit order. `lazycr check` prints it.
var FeatureNames = []struct {
	Bit  uint64
	Name string
}{
	{UFFD_FEATURE_PAGEFAULT_FLAG_WP, "PAGEFAULT_FLAG_WP"},
	{UFFD_FEATURE_EVENT_FORK, "EVENT_FORK"},
	{UFFD_FEATURE_EVENT_REMAP, "EVENT_REMAP"},
	{UFFD_FEATURE_EVENT_REMOVE, "EVENT_REMOVE"},
	{UFFD_FEATURE_MISSING_HUGETLBFS, "MISSING_HUGETLBFS"},
	{UFFD_FEATURE_MISSING_SHMEM, "MISSING_SHMEM"},
	{UFFD_FEATURE_EVENT_UNMAP, "EVENT_UNMAP"},
	{UFFD_FEATURE_SIGBUS, "SIGBUS"},
	{UFFD_FEATURE_THREAD_ID, "THREAD_ID"},
	{UFFD_FEATURE_MINOR_HUGETLBFS, "MINOR_HUGETLBFS"},
	{UFFD_FEATURE_MINOR_SHMEM, "MINOR_SHMEM"},
	{UFFD_FEATURE_EXACT_ADDRESS, "EXACT_ADDRESS"},
	{UFFD_FEATURE_WP_HUGETLBFS_SHMEM, "WP_HUGETLBFS_SHMEM"},
	{UFFD_FEATURE_WP_UNPOPULATED, "WP_UNPOPULATED"},
	{UFFD_FEATURE_POISON, "POISON"},
	{UFFD_FEATURE_WP_ASYNC, "WP_ASYNC"},
	{UFFD_FEATURE_MOVE, "MOVE"},
}

// FeatureMaskNames lists the names of the feature bits set in mask, lowest
// first; bits unknown to this package read "bit<N>".
func FeatureMaskNames(mask uint64) []string {
	var out []string
	for _, f := range FeatureNames {
		if mask&f.Bit != 0 {
			out = append(out, f.Name)
		}
	}
	for rest := mask &^ UFFD_FEATURE_ALL_KNOWN; rest != 0; {
		b := bits.TrailingZeros64(rest)
		rest &^= 1 << b
		out = append(out, "bit"+itoa(b))
	}
	return out
}

// FeatureByName returns the bit of a feature name as printed by
// FeatureMaskNames; the UFFD_FEATURE_ prefix is optional.
func FeatureByName(name string) (uint64, bool) {
	name = strings.TrimPrefix(strings.ToUpper(name), "UFFD_FEATURE_")
	for _, f := range FeatureNames {
		if f.Name == name {
			return f.Bit, true
		}
	}
	return 0, false
}

// UFFDIO_REGISTER modes (UffdioRegister.Mode).
const (
	UFFDIO_REGISTER_MODE_MISSING = 1 << 0
	UFFDIO_REGISTER_MODE_WP      = 1 << 1
	UFFDIO_REGISTER_MODE_MINOR   = 1 << 2
)

// Mode flags of the range ioctls.
const (
	UFFDIO_COPY_MODE_DONTWAKE         = 1 << 0
	UFFDIO_COPY_MODE_WP               = 1 << 1
	UFFDIO_ZEROPAGE_MODE_DONTWAKE     = 1 << 0
	UFFDIO_WRITEPROTECT_MODE_WP       = 1 << 0
	UFFDIO_WRITEPROTECT_MODE_DONTWAKE = 1 << 1
	UFFDIO_CONTINUE_MODE_DONTWAKE     = 1 << 0
	UFFDIO_CONTINUE_MODE_WP           = 1 << 1
	UFFDIO_POISON_MODE_DONTWAKE       = 1 << 0
	UFFDIO_MOVE_MODE_DONTWAKE         = 1 << 0
	UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES  = 1 << 1
)

// Event codes (UffdMsg.Event).
const (
	UFFD_EVENT_PAGEFAULT = 0x12
	UFFD_EVENT_FORK      = 0x13
	UFFD_EVENT_REMAP     = 0x14
	UFFD_EVENT_REMOVE    = 0x15
	UFFD_EVENT_UNMAP     = 0x16
)

// Flags of a UFFD_EVENT_PAGEFAULT message (UffdMsg.PagefaultFlags).
const (
	UFFD_PAGEFAULT_FLAG_WRITE = 1 << 0
	UFFD_PAGEFAULT_FLAG_WP    = 1 << 1
	UFFD_PAGEFAULT_FLAG_MINOR = 1 << 2
)

// UFFD_USER_MODE_ONLY is the userfaultfd(2) flag restricting the fd to
// user-mode faults.
const UFFD_USER_MODE_ONLY = 1

// USERFAULTFD_IOC is the ioctl type of /dev/userfaultfd.
const USERFAULTFD_IOC = 0xAA

// UffdioAPI is struct uffdio_api.
type UffdioAPI struct {
	API      uint64
	Features uint64
	Ioctls   uint64
}

// UffdioRange is struct uffdio_range.
type UffdioRange struct {
	Start uint64
	Len   uint64
}

// UffdioRegister is struct uffdio_register.
type UffdioRegister struct {
	Range  UffdioRange
	Mode   uint64
	Ioctls uint64
}

// UffdioZeropage is struct uffdio_zeropage.
type UffdioZeropage struct {
	Range    UffdioRange
	Mode     uint64
	Zeropage int64
}

// UffdioWriteprotect is struct uffdio_writeprotect.
type UffdioWriteprotect struct {
	Range UffdioRange
	Mode  uint64
}

// UffdioContinue is struct uffdio_continue.
type UffdioContinue struct {
	Range  UffdioRange
	Mode   uint64
	Mapped int64
}

// UffdioPoison is struct uffdio_poison.
type UffdioPoison struct {
	Range   UffdioRange
	Mode    uint64
	Updated int64
}

// UffdioMove is struct uffdio_move.
type UffdioMove struct {
	Dst  uint64
	Src  uint64
	Len  uint64
	Mode uint64
	Move int64
}

// UffdMsg is struct uffd_msg (packed, 32 bytes): an 8-byte header whose first
// byte is the event, then a 24-byte union read through the accessors below.
// The union members are naturally aligned at offset 8, so it is laid out as
// three little-endian u64 words.
type UffdMsg struct {
	Event     uint8
	Reserved1 uint8
	Reserved2 uint16
	Reserved3 uint32
	Arg       [3]uint64
}

// PagefaultFlags is arg.pagefault.flags (UFFD_PAGEFAULT_FLAG_*).
func (m *UffdMsg) PagefaultFlags() uint64 { return m.Arg[0] }

// PagefaultAddress is arg.pagefault.address.
func (m *UffdMsg) PagefaultAddress() uint64 { return m.Arg[1] }

// PagefaultPtid is arg.pagefault.feat.ptid, the faulting thread id when
// UFFD_FEATURE_THREAD_ID was negotiated (else 0).
func (m *UffdMsg) PagefaultPtid() uint32 { return uint32(m.Arg[2]) }

// ForkUfd is arg.fork.ufd, the new uffd installed in our fd table.
func (m *UffdMsg) ForkUfd() uint32 { return uint32(m.Arg[0]) }

// RemapFrom is arg.remap.from.
func (m *UffdMsg) RemapFrom() uint64 { return m.Arg[0] }

// RemapTo is arg.remap.to.
func (m *UffdMsg) RemapTo() uint64 { return m.Arg[1] }

// RemapLen is arg.remap.len.
func (m *UffdMsg) RemapLen() uint64 { return m.Arg[2] }

// RemoveStart is arg.remove.start (also used by UFFD_EVENT_UNMAP).
func (m *UffdMsg) RemoveStart() uint64 { return m.Arg[0] }

// RemoveEnd is arg.remove.end (also used by UFFD_EVENT_UNMAP).
func (m *UffdMsg) RemoveEnd() uint64 { return m.Arg[1] }

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}
