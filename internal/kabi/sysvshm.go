package kabi

// System V shared memory constants golang.org/x/sys/unix lacks
// (include/uapi/linux/shm.h, include/uapi/linux/ipc.h).
const (
	SHM_EXEC   = 0o100000 // shmat: execute access
	SHM_DEST   = 0o1000   // shm_perm.mode: marked for destruction (IPC_RMID while attached)
	SHM_LOCKED = 0o2000   // shm_perm.mode: locked (SHM_LOCK)
	SHM_LOCK   = 11       // shmctl: lock the segment in memory
)

// ShmNextID is the sysctl that gives the next System V shm segment of the
// caller's IPC namespace its id (Documentation/admin-guide/sysctl/kernel.rst
// "msg_next_id, sem_next_id, and shm_next_id"; writing needs
// CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN).
const ShmNextID = "/proc/sys/kernel/shm_next_id"
