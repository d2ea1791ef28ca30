package kabi

// PrctlMmMap is struct prctl_mm_map from include/uapi/linux/prctl.h, the
// argument of prctl(PR_SET_MM, unix.PR_SET_MM_MAP, &map, sizeof(map)).
// prctl(PR_SET_MM, unix.PR_SET_MM_MAP_SIZE, &u32) reports the size the kernel
// expects. Auxv is a pointer in the calling process, AuxvSize its length in
// bytes; ExeFd is a file descriptor (or -1 as u32 to keep the exe).
type PrctlMmMap struct {
	StartCode  uint64
	EndCode    uint64
	StartData  uint64
	EndData    uint64
	StartBrk   uint64
	Brk        uint64
	StartStack uint64
	ArgStart   uint64
	ArgEnd     uint64
	EnvStart   uint64
	EnvEnd     uint64
	Auxv       uint64
	AuxvSize   uint32
	ExeFd      uint32
}
