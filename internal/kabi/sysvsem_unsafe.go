package kabi

import (
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// semctl(2) commands golang.org/x/sys/unix lacks (include/uapi/linux/sem.h,
// include/uapi/linux/ipc.h). On x86-64 the kernel always uses the 64-bit
// ipc structures (no IPC_64 flag needed).
const (
	SEM_GETPID   = 11 // GETPID: pid of the last semop(2) on one semaphore
	SEM_STAT     = 18
	SEM_INFO     = 19
	SEM_STAT_ANY = 20 // SEM_STAT without the read-permission check (Linux 4.17)
)

// SemidDs is struct semid64_ds (arch/x86/include/uapi/asm/sembuf.h,
// x86-64 layout).
type SemidDs struct {
	Perm  unix.SysvIpcPerm
	Otime int64 // last semop(2), seconds since the epoch; 0: never
	_     uint64
	Ctime int64
	_     uint64
	Nsems uint64
	_     [2]uint64
}

// semInfo is struct seminfo (include/uapi/linux/sem.h).
type semInfo struct {
	Semmap, Semmni, Semmns, Semmnu, Semmsl, Semopm, Semume, Semusz, Semvmx, Semaem int32
}

func semctl(id, num, cmd int, arg unsafe.Pointer, name string) (int, error) {
	for {
		r, _, errno := unix.Syscall6(unix.SYS_SEMCTL, uintptr(id), uintptr(num), uintptr(cmd), uintptr(arg), 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, os.NewSyscallError(name, errno)
		}
		return int(r), nil
	}
}

// SemMaxIndex wraps semctl(0, 0, SEM_INFO): the highest index in use in
// the kernel's array of semaphore sets of the caller's IPC namespace, -1
// when there is none. Indexes go to [SemStatAny]. See semctl(2).
func SemMaxIndex() (int, error) {
	var si semInfo
	r, err := semctl(0, 0, SEM_INFO, unsafe.Pointer(&si), "semctl SEM_INFO")
	runtime.KeepAlive(&si)
	return r, err
}

// SemStatAny wraps semctl(index, 0, SEM_STAT_ANY, ds): it fills ds for the
// set at that index and returns its identifier. A free index is EINVAL.
// See semctl(2).
func SemStatAny(index int, ds *SemidDs) (int, error) {
	r, err := semctl(index, 0, SEM_STAT_ANY, unsafe.Pointer(ds), "semctl SEM_STAT_ANY")
	runtime.KeepAlive(ds)
	return r, err
}

// SemGetPid wraps semctl(id, num, GETPID): the pid, in the caller's PID
// namespace, of the process that last operated on semaphore num of set id
// (0 when none did or that process is not visible there). See semctl(2).
func SemGetPid(id, num int) (int, error) {
	return semctl(id, num, SEM_GETPID, nil, "semctl GETPID")
}
