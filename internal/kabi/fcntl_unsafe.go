package kabi

import (
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// FOwnerEx is struct f_owner_ex (include/uapi/asm-generic/fcntl.h): who
// gets the SIGIO/SIGURG of an open file description. Type is F_OWNER_TID
// (0), F_OWNER_PID (1) or F_OWNER_PGRP (2).
type FOwnerEx struct {
	Type int32
	Pid  int32
}

// Owner types of struct f_owner_ex.
const (
	F_OWNER_TID  = 0
	F_OWNER_PID  = 1
	F_OWNER_PGRP = 2
)

// FcntlGetOwnerEx wraps fcntl(fd, F_GETOWN_EX). See fcntl(2).
func FcntlGetOwnerEx(fd int) (FOwnerEx, error) {
	var o FOwnerEx
	for {
		_, _, errno := unix.Syscall(unix.SYS_FCNTL, uintptr(fd), unix.F_GETOWN_EX, uintptr(unsafe.Pointer(&o)))
		runtime.KeepAlive(&o)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return FOwnerEx{}, os.NewSyscallError("fcntl F_GETOWN_EX", errno)
		}
		return o, nil
	}
}
